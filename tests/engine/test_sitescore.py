"""Site-level scoring on crafted truth/proposal pairs, a run GeoPackage, and the real US_R001 truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import mapping
from timeline_fixtures import DATES, GRID, cell_box, write_run

from groundbreak.sitescore import ScoreParams, evaluate_sites
from groundbreak.timeline import TimelineParams, build_timeline

REAL = os.environ.get("GROUNDBREAK_REAL_DATA")
needs_real = pytest.mark.skipif(not REAL, reason="needs GROUNDBREAK_REAL_DATA (the shared data folder)")
EPSG = 32617  # Jacksonville, FL (UTM 17N), like US_R001
X0, Y0 = 435000.0, 3355000.0
OBS_DATES = ("2020-01-10", "2020-03-10", "2020-05-10", "2020-07-10", "2020-09-10", "2020-11-10")
PHASES = ("No Activity", "Site Preparation", "Active Construction", "Active Construction", "Post Construction",
          "Post Construction")


def _lonlat(geom, epsg=EPSG):
    t = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: __import__("numpy").column_stack(t.transform(xy[:, 0], xy[:, 1])))


def site_file(folder: Path, site_id: str, geom, *, status="positive_annotated", dates=OBS_DATES, phases=PHASES,
              start=None, end=None, epsg=EPSG, region="US_R901") -> Path:
    """A SMART site model (truth or proposal) of a polygon given in metres."""
    folder.mkdir(parents=True, exist_ok=True)
    proposal = status.startswith("system_")
    g = _lonlat(geom, epsg)
    feats = [{"type": "Feature", "geometry": mapping(g.convex_hull), "properties": {
        "type": "site", "region_id": region, "site_id": site_id, "version": "1.0.0", "mgrs": "17RMP",
        "status": status, "model_content": "proposed" if proposal else "annotation", "score": 1.0,
        "start_date": start or dates[0], "end_date": end or dates[-1], "originator": "te"}}]
    for d, ph in zip(dates, phases):
        feats.append({"type": "Feature", "geometry": mapping(shapely.MultiPolygon([g]) if g.geom_type == "Polygon"
                                                             else g),
                      "properties": {"type": "observation", "observation_date": d, "current_phase": ph,
                                     "is_occluded": "False", "is_site_boundary": "True", "source": None,
                                     "sensor_name": None, "score": 1.0}})
    path = folder / ("%s.geojson" % site_id)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def rect(dx=0.0, dy=0.0, w=200.0, h=100.0):
    return shapely.box(X0 + dx, Y0 + dy, X0 + dx + w, Y0 + dy + h)


def proposal(folder, site_id, geom, start="2020-03-10", end="2020-09-10", **kw):
    return site_file(folder, site_id, geom, status="system_confirmed", start=start, end=end, **kw)


def score(tmp_path, **kw):
    return evaluate_sites(tmp_path / "truth", tmp_path / "prop", tmp_path / "report", **kw)


def test_perfect_match(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect())
    proposal(tmp_path / "prop", "US_R901_9001", rect())
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1) == (1, 0, 0, 1.0, 1.0, 1.0)
    (m,) = r.matches
    assert (m.truth_id, m.proposal_ids, m.mode, m.spatial_fraction) == ("US_R901_0001", ("US_R901_9001",), "iou", 1)
    # truth activity: first Site Preparation (03-10) to first Post Construction (09-10)
    assert (m.truth_start, m.truth_end, m.start_error_days, m.end_error_days) == ("2020-03-10", "2020-09-10", 0, 0)
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["f1"] == 1.0 and doc["matches"][0]["truth_id"] == "US_R901_0001"


def test_shifted_in_time(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect())
    proposal(tmp_path / "prop", "US_R901_9001", rect(), start="2020-04-09", end="2020-10-10")
    r = score(tmp_path)
    assert r.tp == 1 and r.matches[0].start_error_days == 30 and r.matches[0].end_error_days == 30
    assert r.start_error_days == {"mean_abs": 30.0, "median": 30.0, "max_abs": 30.0}
    # after the truth's activity ended: no temporal overlap, a miss and a false alarm
    proposal(tmp_path / "prop", "US_R901_9001", rect(), start="2020-09-20", end="2020-11-10")
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn, r.f1) == (0, 1, 1, 0.0) and r.false_positives[0][1] == "matches no truth site"


def test_shifted_in_space(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect())
    proposal(tmp_path / "prop", "US_R901_9001", rect(dx=60))  # IoU 140/260 = 0.54
    assert score(tmp_path).tp == 1
    proposal(tmp_path / "prop", "US_R901_9001", rect(dx=150))  # IoU 50/350 = 0.14 < tau
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)
    assert score(tmp_path, params=ScoreParams(tau=0.1)).tp == 1


def test_split_site_is_matched_by_its_parts_combined(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect(w=600, h=100))
    for i in range(6):  # six 100 m pieces: IoU 1/6 each, under tau alone
        proposal(tmp_path / "prop", "US_R901_90%02d" % i, rect(dx=100 * i, w=100))
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    assert r.matches[0].mode == "split" and len(r.matches[0].proposal_ids) == 6


def test_merged_sites_are_matched_by_intersection_over_truth(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect(w=100, h=100))
    site_file(tmp_path / "truth", "US_R901_0002", rect(dx=500, w=100, h=100))
    proposal(tmp_path / "prop", "US_R901_9001", rect(w=600, h=100))  # IoU 1/6 with each
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0) and {m.mode for m in r.matches} == {"merged"}


def test_negative_ignore_and_small_truth(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect(), status="negative", phases=(None,) * 6)
    site_file(tmp_path / "truth", "US_R901_0002", rect(dx=1000), status="ignore", phases=(None,) * 6)
    site_file(tmp_path / "truth", "US_R901_0003", rect(dx=2000, w=80, h=80))  # 6,400 m²: ignore
    site_file(tmp_path / "truth", "US_R901_0004", rect(dx=3000))  # a positive nobody found
    for i, dx in enumerate((0, 1000, 2000)):
        proposal(tmp_path / "prop", "US_R901_900%d" % i, rect(dx=dx, w=200 if dx != 2000 else 80,
                                                              h=100 if dx != 2000 else 80),
                 start=OBS_DATES[0], end=OBS_DATES[-1])
    r = score(tmp_path)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1) and r.missed == ("US_R901_0004",)
    assert r.false_positives == (("US_R901_9000", "matches negative truth US_R901_0001 (negative)"),)
    assert sorted(p for p, _ in r.neutral) == ["US_R901_9001", "US_R901_9002"]
    aside = dict(r.truth_set_aside)
    assert aside["US_R901_0002"] == "status ignore" and aside["US_R901_0003"].startswith("smaller than 9000")
    assert r.counts == {"truth": 4, "truth_positive": 1, "truth_negative": 1, "truth_ignore": 2, "proposals": 3,
                        "proposals_dropped": 0}


def test_proposals_the_programs_scorer_would_drop(tmp_path):
    site_file(tmp_path / "truth", "US_R901_0001", rect())
    proposal(tmp_path / "prop", "US_R901_9001", rect())
    site_file(tmp_path / "prop", "US_R901_9002", rect(dx=900), status="system_proposed")  # not whitelisted
    site_file(tmp_path / "prop", "XX_R000_9003", rect(dx=1800), status="system_confirmed")  # other region
    r = score(tmp_path, region_id="US_R901")
    assert (r.tp, r.fp, r.counts["proposals"], r.counts["proposals_dropped"]) == (1, 0, 1, 1)


def test_run_geopackage_as_proposals(tmp_path):
    # truth: one site on the chip grid (UTM 14N), active from the 3rd to the 6th date
    truth_poly = cell_box(100, 200, 2, 2, 8)
    phases = ["No Activity"] * 2 + ["Active Construction"] * 4 + ["Post Construction"] * 6
    site_file(tmp_path / "truth", "US_R901_0001", truth_poly, dates=DATES, phases=phases, epsg=GRID.epsg)
    active = [0.1, 0.1, 0.9, 0.9, "cloud", 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    run = write_run(tmp_path / "run.gpkg", {(100, 200): active, (120, 200): [0.1] * 9 + [0.9] * 3},
                    cells={(100, 200): cell_box(100, 200, 3, 3, 7)})
    build_timeline(run, TimelineParams(enter=0.7, exit=0.5))
    r = evaluate_sites(tmp_path / "truth", run)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)  # the second site (last three dates) is not in the truth
    assert r.matches[0].start_error_days == 0 and r.matches[0].end_error_days == 0


@needs_real
def test_real_us_r001_truth_scores_itself_as_the_program_would(tmp_path):
    """The 56 real site models, copied as proposals: every scored positive is found, every
    negative copy is a false positive, the set-aside ones are neutral."""
    truth = Path(REAL) / "smart"
    props = tmp_path / "prop"
    props.mkdir()
    for path in sorted((truth / "site_models").glob("*.geojson")):
        doc = json.loads(path.read_text())
        for f in doc["features"]:
            if f["properties"]["type"] == "site":
                f["properties"].update(status="system_confirmed", model_content="proposed")
        (props / path.name).write_text(json.dumps(doc))
    r = evaluate_sites(truth, props, tmp_path / "report")
    # 35 positives in the window and >= 9,000 m², 8 negatives, 13 set aside (7 before 2014, 6 small)
    assert (r.counts["truth"], r.counts["truth_positive"], r.counts["truth_negative"],
            r.counts["truth_ignore"]) == (56, 35, 8, 13)
    assert (r.counts["proposals"], r.counts["proposals_dropped"]) == (49, 7)  # 7 wholly before the window
    assert r.fn == 0 and r.tp == 35 and r.f1 == round(35 / (35 + 4), 4)
    assert r.fp == 8 and all("negative truth" in w for _, w in r.false_positives)
    assert len(r.neutral) == 6 and all("smaller than" in w for _, w in r.neutral)
    assert all(m.start_error_days <= 0 for m in r.matches)  # site start_date is never after activity starts
    aside = dict(r.truth_set_aside)
    assert "US_R001_0003" in aside and "dates" in aside["US_R001_0003"]  # 2009-2012, before the region window
    assert any(w.startswith("smaller than") for w in aside.values())
    (tmp_path / "counts.json").write_text(json.dumps(r.counts))
