"""The ``groundbreak`` command: exit codes, Error/Hint lines, JSON-lines events, cancel, no torch at import."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import Polygon, box

from groundbreak.cli import cli
from groundbreak.protocol import PROTOCOL_VERSION, parse_line

X0, Y1 = ORIGIN
PY = str(Path(sys.executable))
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
ENV["PYTHONUNBUFFERED"] = "1"


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> Path:
    # Same weights, a threshold inside the random scores' spread: some chips detect, some don't.
    out = tmp_path_factory.mktemp("model") / "m"
    shutil.copytree(tiny_model, out)
    doc = json.loads((out / "model.json").read_text())
    doc["properties"]["groundbreak:threshold"] = 0.4
    (out / "model.json").write_text(json.dumps(doc))
    return out


@pytest.fixture
def inputs(tmp_path):
    write_scene(tmp_path / "s_20240501.tif", nodata_cols=300, cloud_box=(0, 256, 512, 768))
    write_scene(tmp_path / "s_20240601.tif", origin=(X0 + 3, Y1 - 2), seed=1)
    write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 1270, X0 + 1530, Y1 - 10)], ids=["site"])
    return tmp_path


def invoke(args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def base_args(folder: Path, model: Path, *extra):
    return ["run", "--aoi", folder / "aoi.geojson", "--scenes", str(folder / "s_*.tif"), "--model", model,
            "--out", folder / "out.gpkg", "--runtime", "eager", *extra]


def events_of(text: str):
    events = [parse_line(line) for line in text.splitlines() if line.strip()]
    assert all(e is not None and e.known and e.v == PROTOCOL_VERSION for e in events)
    assert [e.seq for e in events] == list(range(len(events)))
    return events


def detections_of(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        return sorted((s, c, round(score, 5)) for s, c, score in conn.execute(
            "SELECT scene_id, chip_id, score FROM detections"))
    finally:
        conn.close()


# -- import cost ----------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "import groundbreak",
    "from groundbreak.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from groundbreak.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass",
])
def test_import_and_help_do_not_import_torch(code):
    check = code + "\nimport sys\nsys.stdout.write('\\nTORCH=%s' % ('torch' in sys.modules))"
    out = subprocess.run([PY, "-c", check], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("TORCH=False")


def test_help_texts_have_examples():
    for sub in ([], ["run"], ["plan"], ["info"]):
        result = invoke(sub + ["--help"])
        assert result.exit_code == 0
        assert "$ groundbreak" in result.output


# -- a full run with events -----------------------------------------------------------------------
def test_run_events_and_summary_agree_with_the_geopackage(inputs, model):
    proc = subprocess.run([PY, "-m", "groundbreak"] + [str(a) for a in base_args(inputs, model, "--events", "jsonl")],
                          capture_output=True, text=True, env=ENV, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    events = events_of(proc.stdout)
    types = [e.type for e in events]
    assert types[0] == "hello" and types[-2:] == ["result", "done"]
    assert {"stage", "progress", "warning"} <= set(types)
    assert events[0].get("model")["model_id"].startswith("groundbreak-random")
    done = events[-1]
    assert done.get("status") == "ok" and done.get("exit_code") == 0
    stats = events[-2].get("stats")
    assert events[-2].get("outputs")["gpkg"] == str(inputs / "out.gpkg")
    dropped = stats["chips_dropped"]
    assert stats["chips_planned"] == 18
    assert stats["chips_planned"] == sum(dropped.values()) + stats["chips_inferred"] + stats["chips_failed"]
    assert dropped["nodata"] >= 3 and dropped["cloud"] >= 1
    features = [(f["properties"]["scene_id"], f["properties"]["chip_id"], f["properties"]["score"])
                for e in events if e.type == "features" for f in e.get("features")]
    assert sorted(features) == detections_of(inputs / "out.gpkg")
    assert stats["detections"] == len(features) > 0
    # The human summary on stderr says the same numbers.
    assert "18 planned" in proc.stderr and "%d inferred" % stats["chips_inferred"] in proc.stderr
    assert "cost" in proc.stderr and "DEMO" in proc.stderr
    # Nothing but protocol lines on stdout.
    assert all(line.startswith("{") for line in proc.stdout.splitlines())


def test_run_without_events_prints_no_stdout_and_plan_json(inputs, model):
    result = invoke(base_args(inputs, model))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "Groundbreak run" in result.stderr
    plan = invoke(["plan", "--aoi", inputs / "aoi.geojson", "--scenes", inputs / "s_*.tif", "--model", model, "--json"])
    assert plan.exit_code == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["chips_planned"] == 18 and doc["ground_chips"] == 9
    assert doc["expected_dropped"]["cloud"] >= 1
    assert doc["cost"]["price_per_hour"] > 0


def test_plan_events(inputs, model):
    result = invoke(["plan", "--aoi", inputs / "aoi.geojson", "--scenes", inputs / "s_*.tif", "--model", model,
                     "--events", "jsonl"])
    assert result.exit_code == 0, result.stderr
    events = events_of(result.stdout)
    assert [e.type for e in events][0] == "hello" and [e.type for e in events][-2:] == ["result", "done"]
    stats = events[-2].get("stats")
    assert stats["chips_planned"] == 18 and stats["chips_expected_inferred"] <= 18
    assert events[-1].get("status") == "ok"


# -- errors ---------------------------------------------------------------------------------------
def assert_error(result, code: int, *needles: str):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    err = result.stderr
    if code != 2:
        lines = err.strip().splitlines()
        assert any(line.startswith("Error: ") for line in lines), err
        assert any(line.startswith("Hint: ") for line in lines), err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


def test_missing_scene_file(inputs, model):
    args = base_args(inputs, model)
    args[args.index("--scenes") + 1] = inputs / "nope_20240101.tif"
    assert_error(invoke(args), 1, "nope_20240101.tif")


def test_truncated_scene(inputs, model):
    from scene_fixtures import truncate

    for p in inputs.glob("s_*.tif"):
        p.unlink()
    truncate(write_scene(inputs / "s_20240501.tif"), 0.5)
    assert_error(invoke(base_args(inputs, model)), 1, "s_20240501")


def test_three_band_scene(inputs, model):
    for p in inputs.glob("s_*.tif"):
        p.unlink()
    write_scene(inputs / "s_20240501.tif", count=3)
    assert_error(invoke(base_args(inputs, model)), 1, "nir")


def test_aoi_outside_the_scenes(inputs, model):
    write_aoi(inputs / "aoi.geojson", [box(X0 + 50_000, Y1, X0 + 51_000, Y1 + 1000)])
    assert_error(invoke(base_args(inputs, model)), 1, "no AOI overlaps")


def test_scene_without_date(inputs, model):
    for p in inputs.glob("s_*"):
        p.unlink()
    write_scene(inputs / "s_nodate.tif", date=None)
    assert_error(invoke(base_args(inputs, model)), 1, "s_nodate")


def test_aoi_without_area(inputs, model):
    write_aoi(inputs / "aoi.geojson", [Polygon([(X0, Y1), (X0 + 100, Y1), (X0 + 200, Y1), (X0, Y1)])])
    assert_error(invoke(base_args(inputs, model)), 1, "area")


@pytest.mark.parametrize("where", ["missing-folder", "file-as-folder"])
def test_unwritable_output(inputs, model, where):
    (inputs / "afile").write_text("x")
    target = inputs / ("nope" if where == "missing-folder" else "afile") / "out.gpkg"
    args = base_args(inputs, model)
    args[args.index("--out") + 1] = target
    assert_error(invoke(args), 1)


def test_existing_output_of_another_run(inputs, model):
    assert invoke(base_args(inputs, model)).exit_code == 0
    assert_error(invoke(base_args(inputs, model, "--min-valid", "0.9")), 1, "different run", "--overwrite")
    assert invoke(base_args(inputs, model, "--min-valid", "0.9", "--overwrite")).exit_code == 0


def test_model_folder_that_does_not_exist(inputs, model):
    args = base_args(inputs, model)
    args[args.index("--model") + 1] = inputs / "no-such-model"
    assert_error(invoke(args), 1, "no-such-model")


@pytest.mark.parametrize("damage, needle", [("weights.safetensors", "sha256"), ("model.json", "invalid JSON")])
def test_damaged_model_package(inputs, model, damage, needle):
    broken = inputs / "broken-model"
    shutil.copytree(model, broken)
    (broken / damage).write_text("{ garbage")
    args = base_args(inputs, model)
    args[args.index("--model") + 1] = broken
    assert_error(invoke(args), 1, needle)
    assert not (inputs / "out.gpkg").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--min-valid", "1.5"], "--min-valid"),
    (["--batch-size", "0"], "--batch-size"),
    (["--bogus"], "--bogus"),
    (["--out", "out.txt"], ".gpkg"),
])
def test_usage_errors_exit_2(inputs, model, extra, needle):
    args = base_args(inputs, model)
    if extra[0] == "--out":
        args[args.index("--out") + 1] = inputs / extra[1]
    else:
        args += extra
    assert_error(invoke(args), 2, needle)


def test_missing_required_option_exits_2(inputs):
    assert_error(invoke(["run", "--aoi", inputs / "aoi.geojson"]), 2, "--scenes")


def test_errors_as_events(inputs, model):
    args = base_args(inputs, model, "--events", "jsonl")
    args[args.index("--scenes") + 1] = inputs / "nope_20240101.tif"
    result = invoke(args)
    assert result.exit_code == 1
    events = events_of(result.stdout)
    assert [e.type for e in events][-2:] == ["error", "done"]
    err = events[-2]
    assert err.get("code") == "file_missing" and err.get("hint") and err.get("retryable") is False
    assert events[-1].get("status") == "failed" and events[-1].get("exit_code") == 1


def _corrupt_tile(path: Path, col: int, row: int) -> None:
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_%d_%d" % (col, row), "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_%d_%d" % (col, row), "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        fh.write(np.random.default_rng(1).integers(0, 256, size - 32, dtype=np.uint8).tobytes())
    with rasterio.open(path) as src, pytest.raises(rasterio.errors.RasterioIOError):
        src.read(window=rasterio.windows.Window(col * 256, row * 256, 256, 256))


def test_a_corrupt_tile_exits_3_naming_the_chip(inputs, model):
    (inputs / "s_20240601.tif").unlink()
    _corrupt_tile(inputs / "s_20240501.tif", 1, 1)
    result = invoke(base_args(inputs, model, "--events", "jsonl"))
    assert_error(result, 3, "1 chip(s) could not be read", "32614_512_978_10174 on s_20240501")
    events = events_of(result.stdout)
    assert events[-1].get("status") == "partial" and events[-1].get("exit_code") == 3
    result_event = [e for e in events if e.type == "result"][0]
    assert result_event.get("stats")["chips_failed"] == 1
    warning = [e for e in events if e.type == "warning" and e.get("code") == "partial_run"][0]
    assert "32614_512_978_10174" in warning.get("message")


# -- cancel ---------------------------------------------------------------------------------------
@pytest.fixture
def many_chips(tmp_path):
    for i, day in enumerate(("01", "02", "03")):
        write_scene(tmp_path / ("s_202405%s.tif" % day), size=(1024, 1024), seed=i)
    write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 2038, X0 + 2038, Y1 - 10)], ids=["site"])
    return tmp_path


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["message", "close", "sigterm"])
def test_cancel_from_stdin_keeps_results_and_rerun_completes(many_chips, model, how):
    args = [PY, "-m", "groundbreak"] + [str(a) for a in base_args(many_chips, model, "--events", "jsonl",
                                                                   "--batch-size", "1")]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            event = parse_line(line)
            if event.type == "progress" and event.get("counts")["inferred"] >= 2:
                break
        if how == "message":
            proc.stdin.write('{"type":"cancel"}\n')
            proc.stdin.flush()
        elif how == "close":
            proc.stdin.close()
        else:  # a client's fall-back when the engine does not listen
            proc.terminate()
        rest = proc.stdout.read()  # until the engine exits (stderr is a few lines: no pipe deadlock)
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines.extend(rest.splitlines(keepends=True))
    assert proc.returncode == 0, stderr
    events = events_of("".join(lines))
    assert events[-1].type == "done" and events[-1].get("status") == "cancelled"
    out = many_chips / "out.gpkg"
    kept = _count(out, "chips")
    assert 2 <= kept < 48
    assert events[-2].get("stats")["chips_processed"] == kept
    if how != "message":
        return  # resuming is the same after either way of cancelling: run it once
    # The same command again (batch size does not change results) finishes the job without redoing
    # the kept chips.
    args[args.index("--batch-size") + 1] = "32"
    again = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    result = [e for e in events_of(again.stdout) if e.type == "result"][0]
    assert result.get("stats")["chips_resumed"] == kept
    assert result.get("stats")["chips_processed"] == 48 - kept
    assert _count(out, "chips") == 48


# -- argument handling ----------------------------------------------------------------------------
def test_several_words_after_scenes_and_aoi():
    from groundbreak.cli.common import expand_variadic

    assert expand_variadic(["run", "--scenes", "a.tif", "b.tif", "--aoi", "x.gpkg", "y.shp", "--out", "o.gpkg"]) == [
        "run", "--scenes", "a.tif", "--scenes", "b.tif", "--aoi", "x.gpkg", "--aoi", "y.shp", "--out", "o.gpkg"]
    assert expand_variadic(["--scenes", "a.tif", "--min-valid", "0.3"]) == ["--scenes", "a.tif", "--min-valid", "0.3"]


def test_plan_with_a_shell_expanded_glob(inputs, model):
    scenes = sorted(inputs.glob("s_2024*.tif"))  # the shell also lists the cloud-mask sidecar
    assert len(scenes) == 3
    result = invoke(["plan", "--aoi", inputs / "aoi.geojson", "--scenes", *scenes, "--model", model, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["scenes"] == 2


def test_custom_sidecar_pattern_and_values(inputs, model):
    """--mask-pattern/--mask-*-values: an SCL-like class mask under another name is used."""
    import numpy as np
    import rasterio

    scene = inputs / "s_20240601.tif"
    with rasterio.open(scene) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
        h, w = src.height, src.width
    mask = np.full((h, w), 4, np.uint8)  # 4: vegetation in SCL, clear
    mask[:, : w // 2] = 9  # cloud (high probability) over the western half
    with rasterio.open(inputs / "s_20240601.cloud.tif", "w", **profile) as dst:
        dst.write(mask[None])
    base = ["plan", "--aoi", inputs / "aoi.geojson", "--scenes", scene, "--model", model, "--json"]
    without = json.loads(invoke(base).stdout)
    assert without["expected_dropped"]["cloud"] == 0
    result = invoke(base + ["--mask-pattern", "{stem}.cloud.tif", "--mask-cloud-values", "8,9,10"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["expected_dropped"]["cloud"] >= 2  # the western chips
    other = invoke(base + ["--mask-pattern", "{stem}.cloud.tif", "--mask-cloud-values", "8,10"])
    assert json.loads(other.stdout)["expected_dropped"]["cloud"] == 0  # 9 no longer means cloud
    bad = invoke(base + ["--mask-pattern", "cloud.tif"])
    assert bad.exit_code == 2 and "{stem}" in bad.stderr


def test_missing_torch_is_an_error_with_the_fix(inputs, model):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from groundbreak.cli import main\n"
            "main(sys.argv[1:])\n")
    args = [str(a) for a in base_args(inputs, model)]
    proc = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, env=ENV, cwd=inputs)
    assert proc.returncode == 1, proc.stderr
    assert "Error: this runtime needs torch, which cannot be imported" in proc.stderr
    assert "Hint: pip install torch==2.13.0 (the CPU build)" in proc.stderr
    assert "groundbreak model quantize" in proc.stderr  # the torch-free way out
    assert "Traceback" not in proc.stderr
    # With --overwrite, an earlier output survives a run that cannot start.
    out = inputs / "out.gpkg"
    out.write_bytes(b"earlier results")
    proc = subprocess.run([PY, "-c", code, *args, "--overwrite"], capture_output=True, text=True, env=ENV,
                          cwd=inputs)
    assert proc.returncode == 1 and out.read_bytes() == b"earlier results"


def test_an_unexpected_exception_still_ends_the_stream_with_error_and_done(inputs, model, monkeypatch):
    from groundbreak.pipeline import batches

    def broken(*args, **kwargs):  # stands in for a bug anywhere in the run
        raise KeyError("no such thing")

    monkeypatch.setattr(batches, "infer", broken)
    result = invoke(base_args(inputs, model, "--events", "jsonl"))
    assert result.exit_code == 1
    events = events_of(result.stdout)
    assert [e.type for e in events][-2:] == ["error", "done"]
    assert events[-2].get("code") == "internal" and "KeyError" in events[-2].get("message")
    assert "bug" in events[-2].get("hint") and events[-1].get("status") == "failed"
    assert "Error: unexpected KeyError" in result.stderr


def test_a_multi_date_run_builds_sites_unless_told_not_to(inputs, model):
    write_scene(inputs / "s_20240601.tif", origin=(X0 + 3, Y1 - 2), seed=1, date="2024-06-01")
    result = invoke(base_args(inputs, model, "--events", "jsonl"))
    assert result.exit_code == 0, result.stderr
    events = events_of(result.stdout)
    assert any(e.type == "stage" and e.get("stage") == "aggregate" for e in events)
    timeline = events[-2].get("stats")["timeline"]
    assert timeline["dates"] == 2 and timeline["params"]["min_revisits"] == 2
    layers = {name for name, _ in pyogrio.list_layers(str(inputs / "out.gpkg"))}
    assert {"sites", "site_observations", "detections"} <= layers
    assert "  sites         %d over 2 dates" % timeline["sites"] in result.stderr

    again = invoke(base_args(inputs, model, "--no-timeline", "--overwrite"))
    assert again.exit_code == 0, again.stderr
    assert "sites" not in {name for name, _ in pyogrio.list_layers(str(inputs / "out.gpkg"))}


def test_evaluate_sites_scores_proposals_against_smart_truth(tmp_path):
    data = os.environ.get("GROUNDBREAK_REAL_DATA")
    if not data:
        pytest.skip("GROUNDBREAK_REAL_DATA is not set (path to ../shared/data)")
    truth = Path(data) / "smart"
    site = json.loads((truth / "site_models" / "US_R001_0000.geojson").read_text())
    for feature in site["features"]:
        if feature["properties"]["type"] == "site":
            feature["properties"].update(status="system_confirmed", originator="groundbreak")
    proposals = tmp_path / "proposals"
    proposals.mkdir()
    (proposals / "US_R001_0000.geojson").write_text(json.dumps(site))
    result = invoke(["evaluate", "--sites", truth, "--proposals", proposals, "--out", tmp_path / "report",
                     "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tp"] == 1 and report["fp"] == 0 and report["fn"] == report["counts"]["truth_positive"] - 1
    assert report["matches"][0]["truth_id"] == "US_R001_0000" and report["matches"][0]["mode"] == "iou"
    assert (tmp_path / "report" / "report.json").is_file()
    mixed = invoke(["evaluate", "--sites", truth, "--proposals", proposals, "--labels", "x.gpkg"])
    assert mixed.exit_code == 2 and "cannot be combined" in mixed.stderr


def test_an_openvino_run_streaming_events_exits_and_sends_no_telemetry(inputs, model, tmp_path):
    # Regression: with no OpenVINO consent file, `import openvino` (on the model-loading thread) forked a
    # telemetry child that deadlocked on stdin's lock held by the stdin watcher; the run hung at exit.
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in ENV.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # telemetry skips CI
    env.update(HOME=str(home), GROUNDBREAK_CACHE=str(tmp_path / "cache"))
    code = ("import sys, atexit\n"
            "atexit.register(lambda: sys.stderr.write('\\nTELEMETRY=%r' % sys.modules.get('openvino_telemetry', 0)))\n"
            "from groundbreak.cli import main\n"
            "main(sys.argv[1:])\n")
    args = [str(a) for a in base_args(inputs, model, "--events", "jsonl", "--no-timeline")]
    args[args.index("eager")] = "openvino"
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_path, "w") as fo, open(err_path, "w") as fe:
        proc = subprocess.Popen([PY, "-c", code, *args], stdin=subprocess.PIPE, stdout=fo, stderr=fe, env=env,
                                cwd=inputs)  # stdin stays open, as the plugin keeps it (closing it cancels)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the run did not exit: " + err_path.read_text()[-2000:])
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
    out, err = out_path.read_text(), err_path.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert '"type":"result"' in out.replace(" ", ""), err[-2000:]
    assert "TELEMETRY=None" in err  # blocked before openvino loaded: no event sent, no child forked
    assert not (home / "intel").exists()  # no telemetry id file written into the user's home
