"""Scenes against a model: every problem at once, bands first; ground resolution in metres in any
CRS; far-off resolutions refused unless --allow-resample; resampling reported."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

from groundbreak.cli import cli
from groundbreak.errors import BandMismatchError, MissingDateError, ResolutionError, ScenesUnusableError
from groundbreak.model import load_model_package
from groundbreak.plan import plan_inputs
from groundbreak.protocol import parse_line
from groundbreak.scene import ground_resolution_m, open_scene
from groundbreak.suitability import fit_scene

X0, Y1 = ORIGIN
LON0, LAT0 = -98.97, 47.03  # the same place in lon/lat


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model_package(tiny_model)


def landsat_like(folder):
    """A 90 m scene in EPSG:4326 (0.0008° ≈ 61 m east-west, 89 m north-south at 47° N)."""
    return write_scene(folder / "ls_20240501.tif", size=(64, 64), epsg=4326, origin=(LON0, LAT0), gsd=0.0008)


def test_ground_resolution_is_in_metres_for_geographic_crs(tmp_path):
    scene = open_scene(landsat_like(tmp_path))
    assert ground_resolution_m(scene) == pytest.approx(88.9, abs=0.5)  # the coarser (north-south) axis
    utm = open_scene(write_scene(tmp_path / "u_20240501.tif", gsd=5.0))
    assert ground_resolution_m(utm) == 5.0


def test_a_90m_geographic_scene_is_refused_naming_both_resolutions(tmp_path, model):
    path = landsat_like(tmp_path)
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(LON0 + 0.005, LAT0 - 0.04, LON0 + 0.04, LAT0 - 0.005)],
                    crs="EPSG:4326", ids=["x"])
    with pytest.raises(ResolutionError) as info:
        plan_inputs([aoi], [str(path)], model)
    assert "89 m pixels" in info.value.message and "2.00 m" in info.value.message
    assert "--allow-resample" in info.value.hint
    plan = plan_inputs([aoi], [str(path)], model, allow_resample=True)
    assert plan.fits[0].resampled and plan.fits[0].scale > 40


def test_a_one_band_dem_without_a_date_reports_bands_then_date(tmp_path, model):
    path = write_scene(tmp_path / "dem.tif", count=1, date=None, descriptions=("elevation",))
    scene = open_scene(path, require_date=False)
    fit, problems = fit_scene(scene, model)
    assert fit is None
    assert [p.code for p in problems] == [BandMismatchError.code, MissingDateError.code]


def test_every_problem_of_every_scene_is_one_error(tmp_path, model):
    dem = write_scene(tmp_path / "dem.tif", count=1, date=None, descriptions=("elevation",))
    coarse = write_scene(tmp_path / "c_20240501.tif", gsd=10.0, size=(128, 128))
    good = write_scene(tmp_path / "g_20240501.tif")
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 500, X0 + 500, Y1 - 10)], ids=["x"])
    with pytest.raises(ScenesUnusableError) as info:
        plan_inputs([aoi], [str(dem), str(coarse), str(good)], model)
    codes = [p["code"] for p in info.value.problems]
    assert codes == ["band_mismatch", "resolution_mismatch", "scene_date_missing"]
    assert {p["scene_id"] for p in info.value.problems} == {"dem", "c_20240501"}
    assert "3 problem(s) with 2 scene(s)" in info.value.message
    assert "--band-order" in info.value.hint or "bands" in info.value.hint
    assert "--allow-resample" in info.value.hint and "rename the file with its date" in info.value.hint


def test_the_cli_error_event_lists_every_problem(tmp_path, model):
    dem = write_scene(tmp_path / "dem.tif", count=1, date=None, descriptions=("elevation",))
    coarse = write_scene(tmp_path / "c_20240501.tif", gsd=10.0, size=(128, 128))
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 500, X0 + 500, Y1 - 10)], ids=["x"])
    result = CliRunner().invoke(cli, ["plan", "--aoi", str(aoi), "--scenes", str(dem), str(coarse), "--model",
                                      str(model.root), "--events", "jsonl"])
    assert result.exit_code == 1
    events = [parse_line(x) for x in result.stdout.splitlines() if x.strip()]
    error = next(e for e in events if e.type == "error")
    assert error.get("code") == "scenes_unusable" and len(error.get("problems")) == 3
    assert events[-1].type == "done" and events[-1].get("status") == "failed"
    assert "Error: 3 problem(s) with 2 scene(s)" in result.stderr


def test_resampling_inside_the_range_is_reported_by_plan_and_run(tmp_path, model):
    scene = write_scene(tmp_path / "f_20240501.tif", gsd=3.0, size=(512, 512))
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 1000, X0 + 1000, Y1 - 10)], ids=["x"])
    planned = CliRunner().invoke(cli, ["plan", "--aoi", str(aoi), "--scenes", str(scene), "--model",
                                       str(model.root)])
    assert planned.exit_code == 0, planned.stderr
    assert "f_20240501 has 3.00 m pixels; it is resampled to the model's 2.00 m chip grid" in planned.stderr
    ran = CliRunner().invoke(cli, ["run", "--aoi", str(aoi), "--scenes", str(scene), "--model", str(model.root),
                                   "--out", str(tmp_path / "o.gpkg"), "--runtime", "eager", "--events", "jsonl"])
    assert ran.exit_code == 0, ran.stderr
    result = [parse_line(x) for x in ran.stdout.splitlines() if x.strip()][-2]
    assert result.get("stats")["resampled"] == [{"scene_id": "f_20240501", "from_m": 3.0, "to_m": 2.0}]
    assert "resampled     f_20240501 from 3.00 m to the model's 2.00 m grid" in ran.stderr


def test_info_shows_problems_and_fit_against_the_model(tmp_path, model):
    coarse = write_scene(tmp_path / "c_20240501.tif", gsd=10.0, size=(128, 128))
    result = CliRunner().invoke(cli, ["info", "--json", "--model", str(model.root), str(coarse)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)["scenes"][0]
    assert doc["usable"] is False and [p["code"] for p in doc["problems"]] == ["resolution_mismatch"]
