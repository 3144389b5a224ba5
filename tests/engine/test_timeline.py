"""Timelines: known-answer series, merging of adjacent chips, and the GeoPackage layers."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pyogrio
import pytest
from timeline_fixtures import DATES, GRID, cell_box, write_run

from groundbreak.errors import UsageError
from groundbreak.timeline import (
    TimelineParams,
    build_timeline,
    chip_intervals,
    collapse_rows,
    read_site_observations,
    read_sites,
)

P = TimelineParams(enter=0.7, exit=0.5)
LOW = 0.1


def intervals(values, params=P):
    """Intervals of one chip's series (None = unknown) as (start, last, end|None, support) tuples."""
    known = [(t, v) for t, v in enumerate(values) if v is not None]
    chip = np.zeros(len(known), np.int64)
    date = np.array([t for t, _ in known], np.int32)
    score = np.array([v for _, v in known], np.float32)
    iv = chip_intervals(chip, date, score, len(values), params)
    return [(int(s), int(la), None if int(e) == len(values) else int(e), int(n))
            for s, la, e, n in zip(iv.start, iv.last, iv.end, iv.support)]


def test_start_and_end_dates():
    assert intervals([LOW, LOW, 0.9, 0.9, 0.8, LOW, LOW, LOW]) == [(2, 4, 5, 3)]


def test_occluded_dates_neither_start_continue_nor_end_activity():
    # cloudy inside the site: one interval across the gap
    assert intervals([LOW, 0.9, None, None, 0.9, LOW, LOW]) == [(1, 4, 5, 2)]
    # cloudy before the first clear active view: the start is the first clear active date
    assert intervals([LOW, None, None, 0.9, 0.9, LOW, LOW]) == [(3, 4, 5, 2)]
    # an unknown date between the two low dates still ends it at the first low date
    assert intervals([LOW, 0.9, 0.9, LOW, None, LOW]) == [(1, 2, 3, 2)]


def test_one_date_blips_are_dropped():
    assert intervals([LOW, 0.95, LOW, LOW, LOW, 0.99, LOW, LOW]) == []
    assert intervals([LOW, 0.95, LOW, LOW], TimelineParams(enter=0.7, exit=0.5, min_revisits=1)) == [(1, 1, 2, 1)]


def test_flicker_is_bridged_by_hysteresis():
    # dips to 0.6 (above exit) and one dip to 0.4 (a single low date) stay one site
    assert intervals([LOW, 0.9, 0.6, 0.9, 0.4, 0.9, 0.9, LOW, LOW]) == [(1, 6, 7, 5)]
    # hovering between exit and enter never starts a site
    assert intervals([0.6, 0.65, 0.6, 0.69, 0.6]) == []
    # with end_revisits=1 the single low date ends it
    p1 = TimelineParams(enter=0.7, exit=0.5, end_revisits=1)
    assert intervals([LOW, 0.9, 0.6, 0.9, 0.4, 0.9, 0.9, LOW, LOW], p1) == [(1, 3, 4, 3), (5, 6, 7, 2)]


def test_ongoing_at_the_last_date():
    assert intervals([LOW, LOW, 0.9, 0.9]) == [(2, 3, None, 2)]
    # a single low last date does not end it either (it could be one noisy date)
    assert intervals([LOW, 0.9, 0.9, 0.9, LOW]) == [(1, 3, None, 3)]
    # active on the last date only: not yet confirmed, not reported
    assert intervals([LOW, LOW, LOW, 0.9]) == []


def test_two_intervals_on_one_chip():
    assert intervals([0.9, 0.9, LOW, LOW, LOW, 0.8, 0.9, 0.9]) == [(0, 1, 2, 2), (5, 7, None, 3)]


def test_several_scenes_of_one_date_count_once_with_the_highest_score():
    chip = np.array([0, 0, 0, 0], np.int64)
    date = np.array([1, 1, 0, 2], np.int32)
    score = np.array([0.2, 0.9, 0.1, 0.8], np.float32)
    c, d, s = collapse_rows(chip, date, score, 3)
    assert d.tolist() == [0, 1, 2] and s.tolist() == pytest.approx([0.1, 0.9, 0.8])


def test_parameters_are_checked():
    with pytest.raises(UsageError, match="exit"):
        TimelineParams(enter=0.5, exit=0.7)
    with pytest.raises(UsageError):
        TimelineParams(min_revisits=0)
    assert TimelineParams().resolve(0.72) == TimelineParams(enter=0.72, exit=0.52)
    assert TimelineParams().resolve(None).enter == 0.5


def _site_chips(result):
    return sorted(tuple(sorted(s.chip_ids)) for s in result.sites)


def _whole(*chips):
    return {c: cell_box(*c, 0, 0, 16) for c in chips}


def test_adjacent_chips_active_at_overlapping_times_merge(tmp_path):
    cells = _whole((100, 200), (101, 201), (102, 201), (110, 200), (100, 201))
    run = write_run(tmp_path / "run.gpkg", cells=cells, series={
        (100, 200): [LOW, 0.9, 0.9, 0.9, LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW],
        (101, 201): [LOW, LOW, 0.9, 0.9, 0.9, LOW, LOW, LOW, LOW, LOW, LOW, LOW],  # diagonal neighbour
        (102, 201): [LOW, LOW, LOW, LOW, LOW, 0.8, 0.9, LOW, LOW, LOW, LOW, LOW],  # touches the end: merged
        (110, 200): [LOW, 0.9, 0.9, LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW],  # far away
        (100, 201): [LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW, 0.9, 0.9, 0.9],  # adjacent, years later
    })
    result = build_timeline(run, P)
    ids = {c: GRID.chip_id(*c) for c in [(100, 200), (101, 201), (102, 201), (110, 200), (100, 201)]}
    assert _site_chips(result) == sorted([
        tuple(sorted([ids[(100, 200)], ids[(101, 201)], ids[(102, 201)]])),
        (ids[(110, 200)],), (ids[(100, 201)],)])
    merged = next(s for s in result.sites if len(s.chip_ids) == 3)
    assert (merged.start_date, merged.end_date, merged.last_active_date) == (DATES[1], DATES[7], DATES[6])
    later = next(s for s in result.sites if s.chip_ids == (ids[(100, 201)],))
    assert later.ongoing and later.end_date is None and later.start_date == DATES[9]
    # numbered by start date, then west to east
    assert [s.site_id for s in result.sites] == ["site_0001", "site_0002", "site_0003"]
    assert [s.start_date for s in result.sites] == sorted(s.start_date for s in result.sites)


def test_touching_chips_with_distant_active_cells_stay_two_sites(tmp_path):
    active = [LOW, 0.9, 0.9, 0.9, LOW, LOW] + [LOW] * 6
    near = {(30, 30): cell_box(30, 30, 4, 14, 2), (31, 30): cell_box(31, 30, 4, 0, 2)}  # 0 m apart
    far = {(40, 30): cell_box(40, 30, 4, 2, 2), (41, 30): cell_box(41, 30, 4, 12, 2)}  # 768 m apart
    run = write_run(tmp_path / "run.gpkg", {c: active for c in [*near, *far]}, cells={**near, **far})
    assert _site_chips(build_timeline(run, P)) == sorted([
        (GRID.chip_id(30, 30), GRID.chip_id(31, 30)), (GRID.chip_id(40, 30),), (GRID.chip_id(41, 30),)])
    merged_anyway = build_timeline(run, TimelineParams(enter=0.7, exit=0.5, merge_gap_m=1000))
    assert len(merged_anyway.sites) == 2


def test_unknown_is_never_negative_in_the_site_observations(tmp_path):
    run = write_run(tmp_path / "run.gpkg", {
        (5, 5): [LOW, 0.9, "cloud", None, "failed", 0.9, 0.85, LOW, LOW, "shadow", LOW, LOW],
        (50, 50): [LOW] * 12})  # another chip seen on every date: every date was processed
    result = build_timeline(run, P)
    (site,) = result.sites
    assert (site.start_date, site.last_active_date, site.end_date) == (DATES[1], DATES[6], DATES[7])
    assert site.unknown_dates == 3 and site.supporting_dates == 3 and site.dates_in_span == 6
    obs = result.observations(site)
    assert [o.status.value for o in obs] == ["inactive", "active", "unknown", "unknown", "unknown", "active",
                                             "active", "inactive", "inactive", "unknown", "inactive", "inactive"]
    assert [o.phase.value for o in obs][:3] == ["No Activity", "Active Construction", "Unknown"]
    assert obs[8].phase.value == "Post Construction"
    assert [o.occluded for o in obs] == [o.score is None for o in obs]
    rows = read_site_observations(run)[site.site_id]
    assert [r["status"] for r in rows] == [o.status.value for o in obs]
    assert [r["occluded"] for r in rows] == [int(o.occluded) for o in obs]
    assert rows[2]["score"] is None and rows[1]["score"] == pytest.approx(0.9)
    assert rows[1]["source"] == "scene_20220201"


def test_footprint_comes_from_the_active_cells(tmp_path):
    cells = {(7, 7): cell_box(7, 7, 2, 3, 3)}
    run = write_run(tmp_path / "run.gpkg", {(7, 7): [LOW, 0.9, 0.9, LOW, LOW] + [LOW] * 7}, cells=cells)
    (site,) = build_timeline(run, P).sites
    assert site.area_m2 == pytest.approx((3 * 32) ** 2)
    assert site.footprint.equals(cells[(7, 7)])
    (row,) = read_sites(run)
    assert row["area_m2"] == pytest.approx((3 * 32) ** 2) and row["geometry"].equals(cells[(7, 7)])


def _table_digest(path, table):
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute('SELECT * FROM "%s" ORDER BY 1' % table).fetchall()
    finally:
        conn.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest(), len(rows)


def test_layers_for_qgis_rerun_replaces_and_detections_are_untouched(tmp_path):
    run = write_run(tmp_path / "run.gpkg", {
        (1, 1): [LOW, 0.9, 0.9, 0.9, LOW, LOW] + [LOW] * 6,
        (9, 9): [LOW] * 8 + [0.9, 0.9, 0.9, 0.9]})
    before = {t: _table_digest(run, t) for t in ("detections", "chips", "activity", "runs")}
    first = build_timeline(run, P)
    second = build_timeline(run, TimelineParams(enter=0.8, exit=0.6, min_revisits=3))
    assert {t: _table_digest(run, t) for t in before} == before
    layers = dict(pyogrio.list_layers(run))
    assert layers["sites"] == "MultiPolygon" and layers["site_observations"] == "MultiPolygon"
    info = pyogrio.read_info(run, layer="sites")
    assert info["crs"] == "EPSG:32614" and info["features"] == len(second.sites) == len(first.sites) == 2
    types = dict(zip(info["fields"], info["dtypes"]))
    assert types["start_date"].startswith("datetime64") and types["temporal_end"].startswith("datetime64")
    obs = pyogrio.read_info(run, layer="site_observations")
    assert obs["features"] == 2 * len(DATES)  # replaced, not appended
    assert dict(zip(obs["fields"], obs["dtypes"]))["date"].startswith("datetime64")
    conn = sqlite3.connect(str(run))
    try:
        builds = conn.execute("SELECT params FROM timeline_runs ORDER BY id").fetchall()
        ongoing = conn.execute("SELECT end_date, temporal_end, ongoing FROM sites WHERE ongoing=1").fetchall()
    finally:
        conn.close()
    assert [b[0] for b in builds] == [
        '{"end_revisits": 2, "enter": 0.7, "exit": 0.5, "merge_gap_m": 64.0, "min_revisits": 2}',
        '{"end_revisits": 2, "enter": 0.8, "exit": 0.6, "merge_gap_m": 64.0, "min_revisits": 3}']
    assert ongoing == [(None, DATES[-1], 1)]


def test_threshold_defaults_to_the_default_models_when_the_run_used_it(tmp_path):
    from groundbreak.model import load_model_package

    model = load_model_package(None)
    run = write_run(tmp_path / "run.gpkg", {(1, 1): [LOW, 0.9, 0.9, LOW, LOW] + [LOW] * 7},
                    model_sha256=model.sha256)
    result = build_timeline(run)
    assert result.params.enter == pytest.approx(model.threshold) and model.model_id in result.threshold_source
    other = write_run(tmp_path / "other.gpkg", {(1, 1): [LOW] * 12})
    assert build_timeline(other).params.enter == 0.5


def test_one_aoi_at_a_time_keeps_the_other_aois_sites(tmp_path):
    aoi = {(1, 1): "north", (3, 3): "south", (6, 6): "north,south"}
    active = [LOW, 0.9, 0.9, LOW, LOW] + [LOW] * 7
    run = write_run(tmp_path / "run.gpkg", {(1, 1): active, (3, 3): active, (6, 6): active}, aoi=aoi)
    north = build_timeline(run, P, aoi_id="north")
    south = build_timeline(run, P, aoi_id="south")
    assert _site_chips(north) == [(GRID.chip_id(1, 1),), (GRID.chip_id(6, 6),)]
    assert _site_chips(south) == [(GRID.chip_id(3, 3),), (GRID.chip_id(6, 6),)]
    assert all(s.site_id.startswith("south_site_") for s in south.sites)
    rows = read_sites(run)
    assert sorted({r["aoi_id"] for r in rows}) == ["north", "south"]
    assert len(read_sites(run, aoi_id="north")) == len(north.sites)
    build_timeline(run, P, aoi_id="north")  # a rebuild of north leaves south alone
    assert len(read_sites(run, aoi_id="south")) == len(south.sites)


def test_missing_rows_on_shifted_dates_make_no_phantom_change(tmp_path):
    # A scene whose footprint is a few metres off misses an edge chip on some dates: no row, so
    # unknown; the chip never turns active or inactive because of it.
    run = write_run(tmp_path / "run.gpkg", {
        (4, 4): [LOW, LOW, 0.9, None, 0.9, None, 0.9, 0.9, None, 0.9, LOW, LOW],
        (6, 4): [LOW, None, LOW, None, LOW, None, LOW, LOW, None, LOW, LOW, None],
        (9, 4): [LOW] * 12})
    result = build_timeline(run, P)
    (site,) = result.sites
    assert (site.chip_ids, site.start_date, site.end_date) == ((GRID.chip_id(4, 4),), DATES[2], DATES[10])
    assert site.unknown_dates == 3 and result.stats["rows"] == 9 + 7 + 12


def test_cli_builds_the_timeline_and_the_smart_export(tmp_path):
    import json

    from click.testing import CliRunner

    from groundbreak.cli import cli

    run = write_run(tmp_path / "run.gpkg", {(1, 1): [LOW, 0.9, 0.9, 0.9] + [LOW] * 8, (9, 9): [LOW] * 12})
    res = CliRunner().invoke(cli, ["timeline", "--in", str(run), "--enter", "0.7", "--exit", "0.5", "--json",
                                   "--smart", str(tmp_path / "smart"), "--region-id", "US_R901"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["params"] == {"enter": 0.7, "exit": 0.5, "min_revisits": 2, "end_revisits": 2, "merge_gap_m": 64.0}
    assert [s["start_date"] for s in doc["sites"]] == [DATES[1]] and doc["sites"][0]["end_date"] == DATES[4]
    assert [p.rsplit("/", 1)[-1] for p in doc["smart"]["site_models"]] == ["US_R901_0001.geojson"]
    bad = CliRunner().invoke(cli, ["timeline", "--in", str(run), "--enter", "0.5", "--exit", "0.7"])
    assert bad.exit_code == 2 and "exit threshold" in bad.stderr
    missing = CliRunner().invoke(cli, ["timeline", "--in", str(tmp_path / "nope.gpkg")])
    assert missing.exit_code == 1 and "no run GeoPackage" in missing.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_real_naip_farmland_series_reports_at_most_one_site(tmp_path):
    """Five real NAIP dates of North Dakota farmland (no construction; grids off by 0.6-3 m between
    dates), run with the default 2 m model resampled from 5 m: at most one site (issue 8)."""
    import os
    from pathlib import Path

    from click.testing import CliRunner
    from conftest import write_aoi

    from groundbreak.cli import cli

    data = os.environ.get("GROUNDBREAK_REAL_DATA")
    if not data:
        pytest.skip("GROUNDBREAK_REAL_DATA is not set (path to ../shared/data)")
    import rasterio
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    scenes = sorted((Path(data) / "naip").glob("*.tif"))
    bounds = []
    for p in scenes:
        with rasterio.open(p) as src:
            bounds.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    w, s = max(b[0] for b in bounds), max(b[1] for b in bounds)
    e, n = min(b[2] for b in bounds), min(b[3] for b in bounds)
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(w, s, e, n)], crs="EPSG:4326", ids=["naip"])
    out = tmp_path / "naip.gpkg"
    res = CliRunner().invoke(cli, ["run", "--aoi", str(aoi), "--scenes", *map(str, scenes), "--out", str(out),
                                   "--allow-resample"])
    assert res.exit_code == 0, res.stderr
    result = build_timeline(out)
    assert len(result.dates) == 5 and result.stats["chips"] >= 50
    assert len(result.sites) <= 1, [(s.site_id, s.start_date, s.peak_score) for s in result.sites]


def test_a_run_with_every_chip_clouded_has_no_sites_but_the_layers(tmp_path):
    run = write_run(tmp_path / "run.gpkg", {(1, 1): ["cloud"] * 12, (2, 1): ["nodata"] * 12})
    result = build_timeline(run, P)
    assert result.sites == () and result.stats["rows"] == 24 and result.stats["rows_inferred"] == 0
    assert pyogrio.read_info(run, layer="sites")["features"] == 0
    assert read_site_observations(run) == {}
