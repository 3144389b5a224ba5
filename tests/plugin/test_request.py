"""Request building: no QGIS needed."""

from __future__ import annotations

import pytest

from plugin import request
from plugin.request import RequestError, RunRequest


def test_run_args_carry_every_option_in_the_cli_contract():
    req = RunRequest(aois=("/a/aoi1.gpkg", "/a/aoi2.geojson"), scenes=("/s/one.tif", "/s/two.tif"), out="/o/out.gpkg",
                     model="/m/demo", min_valid=0.5, batch_size=16, threads=2, price_per_hour=0.25,
                     aoi_id_field="name", band_order=("red", "green", "blue", "nir"), runtime="eager")
    assert request.run_args(req) == [
        "run", "--aoi", "/a/aoi1.gpkg", "--aoi", "/a/aoi2.geojson", "--scenes", "/s/one.tif", "/s/two.tif",
        "--out", "/o/out.gpkg", "--model", "/m/demo", "--min-valid", "0.5", "--batch-size", "16", "--threads", "2",
        "--price-per-hour", "0.25", "--aoi-id-field", "name", "--band-order", "red,green,blue,nir",
        "--runtime", "eager", "--events", "jsonl",
    ]


def test_plan_args_have_no_output_and_omit_unset_options():
    req = RunRequest(aois=("a.gpkg",), scenes=("s.tif",), out="ignored.gpkg", runtime="eager", batch_size=8,
                     threads=2)
    assert request.run_args(req, "plan") == ["plan", "--aoi", "a.gpkg", "--scenes", "s.tif", "--threads", "2",
                                             "--events", "jsonl"]


@pytest.mark.parametrize("req, command, fragment", [
    (RunRequest(aois=(), scenes=("s.tif",), out="o.gpkg"), "run", "no AOI"),
    (RunRequest(aois=("a",), scenes=(), out="o.gpkg"), "run", "no scenes"),
    (RunRequest(aois=("a",), scenes=("s",)), "run", "no output"),
    (RunRequest(aois=("a",), scenes=("s",), out="o", min_valid=1.5), "run", "outside 0..1"),
    (RunRequest(aois=("a",), scenes=("s",), out="o", batch_size=0), "run", "batch size"),
    (RunRequest(aois=("a",), scenes=("s",), out="o", threads=0), "plan", "threads"),
    (RunRequest(aois=("a",), scenes=("s",), out="o"), "train", "unknown engine command"),
])
def test_invalid_requests_are_refused_with_a_reason(req, command, fragment):
    with pytest.raises(RequestError, match=fragment):
        request.run_args(req, command)


def test_info_and_model_args():
    assert request.info_args(["x.tif", "y.tif"]) == ["info", "--json", "x.tif", "y.tif"]
    assert request.info_args(["x.tif"], model="m") == ["info", "--json", "--model", "m", "x.tif"]
    assert request.model_args() == ["model", "show", "--json"]
    assert request.model_args("/m") == ["model", "show", "/m", "--json"]
    with pytest.raises(RequestError):
        request.info_args([])


def test_engine_argv_runs_the_engine_as_a_module_and_needs_an_interpreter():
    assert request.engine_argv("/venv/bin/python", ["model", "--json"]) == [
        "/venv/bin/python", "-m", "groundbreak", "model", "--json"]
    with pytest.raises(RequestError, match="no engine interpreter"):
        request.engine_argv("", ["model"])


def test_clean_environment_drops_qgis_python_and_gdal_variables():
    base = {"PATH": "/usr/bin", "PYTHONHOME": "/q", "PYTHONPATH": "/q/py", "GDAL_DATA": "/g", "PROJ_LIB": "/p",
            "PROJ_DATA": "/p", "GDAL_DRIVER_PATH": "/d", "HOME": "/root"}
    env = request.clean_environment(base)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "PYTHONUNBUFFERED": "1"}
    assert "PYTHONPATH" in base  # the input is not modified


def test_default_interpreter_is_never_sys_executable(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(request, "checkout_root", lambda: None)
    legacy = tmp_path / "groundbreak" / "engine-venv" / "bin" / "python"
    assert request.default_interpreter(str(tmp_path)) == str(legacy)
    assert request.default_interpreter(None) == ""
    assert request.default_interpreter(str(tmp_path)) != sys.executable


def test_default_interpreter_prefers_the_checkout_venv(tmp_path, monkeypatch):
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    monkeypatch.setattr(request, "checkout_root", lambda: tmp_path)
    assert request.default_interpreter("/profile") == str(tmp_path / ".venv" / "bin" / "python")


def test_scene_and_model_descriptions_accept_flat_and_nested_info():
    from plugin.summary import describe_model, describe_scene

    flat = {"date": "2014-07-20", "bands": ["red", "green", "blue", "nir"], "res": [5.0, 5.0], "epsg": 26914}
    nested = {"date": "2022-05-18", "crs": {"epsg": 32614, "name": "UTM 14N"}, "resolution": [2.0, 2.0],
              "bands": [{"index": 1, "name": "red"}, {"index": 2, "name": "green"}], "size": {"bands": 2}}
    assert describe_scene(flat) == "2014-07-20 · red,green,blue,nir · 5.0 m · EPSG:26914"
    assert describe_scene(nested) == "2022-05-18 · red,green · 2.0 m · EPSG:32614"
    assert describe_scene({}) == "no date · None bands · 0.0 m · EPSG:None"
    card = describe_model({"model_id": "m", "version": "1", "bands": ["red"], "gsd": 2, "chip_size": 256,
                           "demo": True, "card_summary": "Demo."})
    assert "DEMO" in card and card.endswith("Demo.")
    assert "DEMO" not in describe_model({"model_id": "m", "demo": False})


def test_bundled_model_is_handed_to_the_engine_unless_one_is_set(tmp_path, monkeypatch):
    model = tmp_path / "models" / "groundbreak-demo"
    model.mkdir(parents=True)
    monkeypatch.setattr(request, "PLUGIN_DIR", tmp_path)
    assert "GROUNDBREAK_MODEL" not in request.clean_environment({})  # no model.json: nothing bundled
    (model / "model.json").write_text("{}")
    assert request.clean_environment({})["GROUNDBREAK_MODEL"] == str(model)
    assert request.clean_environment({"GROUNDBREAK_MODEL": "/mine"})["GROUNDBREAK_MODEL"] == "/mine"
