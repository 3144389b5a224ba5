"""SMART export (schema-valid, scorer-ready) and reading the program's own site models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import shapely
from timeline_fixtures import DATES, write_run

from groundbreak.errors import OutputError, UsageError
from groundbreak.smart import (
    ORIGINATOR,
    PHASES,
    SmartOptions,
    export_smart,
    find_region_model,
    mgrs_square,
    read_site_models,
    smart_validator,
)
from groundbreak.timeline import TimelineParams, build_timeline

REAL = os.environ.get("GROUNDBREAK_REAL_DATA")
needs_real = pytest.mark.skipif(not REAL, reason="needs GROUNDBREAK_REAL_DATA (the shared data folder)")
LOW = 0.1


def _schema() -> Path:
    return Path(REAL) / "smart" / "smart.schema.json"


@pytest.fixture
def exported(tmp_path):
    run = write_run(tmp_path / "run.gpkg", {
        (977, 10170): [LOW, 0.9, "cloud", 0.9, 0.8, LOW, LOW, LOW, LOW, LOW, LOW, LOW],
        (978, 10170): [LOW, LOW, 0.9, 0.9, LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW],
        (990, 10180): [LOW] * 8 + [0.95, 0.9, None, 0.9],
    }, cells=None)
    result = build_timeline(run, TimelineParams(enter=0.7, exit=0.5))
    return result, export_smart(run, tmp_path / "smart", SmartOptions(region_id="US_R901"))


def _docs(export):
    return [json.loads(p.read_text()) for p in (export.region_model, *export.site_models)]


def test_export_has_what_the_programs_scorer_needs(exported):
    result, export = exported
    assert export.region_model.name == "US_R901.geojson"
    assert [p.name for p in export.site_models] == ["US_R901_%04d.geojson" % (i + 1) for i in range(len(result.sites))]
    for path, site in zip(export.site_models, result.sites):
        doc = json.loads(path.read_text())
        (feat,) = [f for f in doc["features"] if f["properties"]["type"] == "site"]
        p = feat["properties"]
        assert p["status"] == "system_confirmed" and p["model_content"] == "proposed"
        assert p["originator"] == ORIGINATOR and p["version"] and p["mgrs"] == "14TNT"
        assert p["start_date"] == site.start_date and p["end_date"] is not None
        assert 0 <= p["score"] <= 1 and "US_R901" in path.name and p["site_id"] == path.stem
        assert p["misc_info"]["groundbreak_site_id"] == site.site_id
        obs = [f for f in doc["features"] if f["properties"]["type"] == "observation"]
        assert [o["properties"]["observation_date"] for o in obs] == list(DATES)  # one per processed date
        for o in obs:
            op = o["properties"]
            assert {"observation_date", "current_phase", "is_site_boundary", "source", "is_occluded",
                    "sensor_name"} <= set(op)
            assert op["current_phase"] in PHASES and op["is_occluded"] in ("True", "False")
            assert (op["is_occluded"] == "True") == (op["current_phase"] == "Unknown") == ("score" not in op)
            assert o["geometry"]["type"] == "MultiPolygon"
            lon, lat = o["geometry"]["coordinates"][0][0][0]
            assert -99.2 < lon < -98.9 and 46.9 < lat < 47.1  # EPSG:4326 lon/lat (UTM 14N ground)
    ongoing = json.loads(export.site_models[-1].read_text())["features"][0]["properties"]
    assert ongoing["misc_info"]["ongoing"] is True and ongoing["end_date"] == DATES[-1]
    first = json.loads(export.site_models[0].read_text())["features"]
    phases = [f["properties"]["current_phase"] for f in first[1:]]
    assert phases[:4] == ["No Activity", "Active Construction", "Unknown", "Active Construction"]
    assert phases[-1] == "Post Construction"


@needs_real
def test_export_validates_against_the_smart_schema_with_only_originator_relaxed(exported):
    _, export = exported
    relaxed = smart_validator(_schema())
    strict = smart_validator(_schema(), originators=())
    for doc in _docs(export):
        assert list(relaxed.iter_errors(doc)) == []
        # without the relaxation, the only complaint is Groundbreak's originator code
        errors = list(strict.iter_errors(doc))
        assert errors and all(ORIGINATOR in json.dumps(e.instance) for e in errors)


def test_export_reads_back(exported):
    result, export = exported
    sites = read_site_models(export.out_dir, region_id="US_R901")
    assert [s.start_date for s in sites] == [s.start_date for s in result.sites]
    assert all(s.status == "system_confirmed" and len(s.observations) == len(DATES) for s in sites)
    region = find_region_model(export.out_dir)
    assert region is not None and region.region_id == "US_R901"
    assert (region.start_date, region.end_date) == (DATES[0], DATES[-1])
    assert all(region.geometry.contains(s.geometry.centroid) for s in sites)


def test_reexport_replaces_its_own_files_but_never_someone_elses(exported, tmp_path):
    result, export = exported
    gpkg = result.gpkg
    (export.out_dir / "site_models" / "US_R901_0099.geojson").write_text(export.site_models[0].read_text())
    again = export_smart(gpkg, export.out_dir, SmartOptions(region_id="US_R901"))
    assert sorted(p.name for p in (export.out_dir / "site_models").iterdir()) == [p.name for p in again.site_models]
    truth = tmp_path / "truth"
    shutil.copytree(export.out_dir, truth)
    doc = json.loads((truth / "site_models" / "US_R901_0001.geojson").read_text())
    doc["features"][0]["properties"].update(originator="te", model_content="annotation", status="positive_annotated")
    (truth / "site_models" / "US_R901_0001.geojson").write_text(json.dumps(doc))
    with pytest.raises(OutputError, match="not written by"):
        export_smart(gpkg, truth, SmartOptions(region_id="US_R901"))
    assert json.loads((truth / "site_models" / "US_R901_0001.geojson").read_text()) == doc


def test_options_are_checked():
    with pytest.raises(UsageError, match="region id"):
        SmartOptions(region_id="demo")
    with pytest.raises(UsageError, match="sensor_name"):
        SmartOptions(sensor_name="NAIP")
    assert mgrs_square(-81.64, 30.33) == "17RMP"


@needs_real
def test_all_56_real_site_models_parse():
    folder = Path(REAL) / "smart"
    sites = read_site_models(folder)
    assert len(sites) == 56 and len({s.site_id for s in sites}) == 56
    statuses = {s.status for s in sites}
    assert statuses == {"positive_annotated", "positive_pending", "positive_partial", "positive_excluded", "negative"}
    assert sum(len(s.observations) for s in sites) == 1697
    assert sum(s.score == 1.0 for s in sites) == 56  # five files say "score": null: read as 1.0
    for s in sites:
        assert s.start_date and s.end_date and s.start_date <= s.end_date
        assert s.geometry.is_valid and s.observations
        assert all(shapely.get_srid(o.geometry) == 0 and o.geometry.bounds[0] < -81 for o in s.observations)
        assert all(set(o.phases) <= set(PHASES) for o in s.observations)
    multi = [o for s in sites for o in s.observations if len(o.phases) > 1]
    assert multi and all(o.geometry.geom_type == "MultiPolygon" for o in multi)
    region = find_region_model(folder)
    assert region is not None and region.region_id == "US_R001"
    assert (region.start_date, region.end_date) == ("2014-01-01", "2021-08-31")


@needs_real
def test_real_site_models_validate_against_the_schema():
    v = smart_validator(_schema())
    folder = Path(REAL) / "smart" / "site_models"
    bad = {p.name for p in folder.glob("*.geojson") if list(v.iter_errors(json.loads(p.read_text())))}
    # the program's own files are the reference for the schema: the ones with "score": null fail
    assert bad == {"US_R001_%04d.geojson" % i for i in range(51, 56)}
