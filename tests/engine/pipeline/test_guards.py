"""Regression tests for silent wrong answers and lost work (issue 7): mixed dtypes in one batch, the
resume guard, --overwrite that must not lose the old output, --batch-size as the forward pass, and
a failed attempt recorded as failed."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

from groundbreak.errors import GroundbreakError, OutputError, UsageError
from groundbreak.masks import MaskRules
from groundbreak.model import load_model_package
from groundbreak.pipeline import RunOptions, run_detection
from groundbreak.plan import plan_inputs
from groundbreak.reporter import CancelToken, Reporter

X0, Y1 = ORIGIN


def with_threshold(package: Path, out: Path, threshold: float) -> Path:
    shutil.copytree(package, out)
    doc = json.loads((out / "model.json").read_text())
    doc["properties"]["groundbreak:threshold"] = threshold
    (out / "model.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    return load_model_package(with_threshold(tiny_model, tmp_path_factory.mktemp("m") / "m", 0.4))


def aoi_file(folder: Path) -> Path:
    return write_aoi(folder / "aoi.geojson", [box(X0 + 10, Y1 - 1014, X0 + 1526, Y1 - 10)], ids=["site"])


def scores(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        return {(s, c): v for s, c, v in conn.execute("SELECT scene_id, chip_id, score FROM chips "
                                                       "WHERE status='inferred'")}
    finally:
        conn.close()


def run(folder, scenes, model, out, **kw):
    plan = plan_inputs([aoi_file(folder)], [str(s) for s in scenes], model,
                       mask_rules=kw.pop("mask_rules", None), band_order=kw.pop("band_order", None))
    cancel = kw.pop("cancel", None)
    opts = RunOptions(**{"runtime": "eager", **kw})
    return run_detection(plan, model, out, options=opts, reporter=Reporter(), cancel=cancel)


def test_a_batch_spanning_uint8_and_uint16_scenes_scales_each_chip_by_its_own_dtype(tmp_path, model):
    a = write_scene(tmp_path / "a_20240501.tif", size=(768, 512), dtype="uint8", seed=1)
    b = write_scene(tmp_path / "b_20240601.tif", size=(768, 512), dtype="uint16", seed=2)
    mixed = run(tmp_path, [a, b], model, tmp_path / "mixed.gpkg", batch_size=64)
    assert mixed.stats.forward_batch == 12  # both scenes' 6 chips went through one forward pass
    alone = {**scores(run(tmp_path, [a], model, tmp_path / "a.gpkg").output),
             **scores(run(tmp_path, [b], model, tmp_path / "b.gpkg").output)}
    together = scores(tmp_path / "mixed.gpkg")
    assert set(together) == set(alone) and len(alone) == 12
    assert max(abs(together[k] - alone[k]) for k in alone) < 1e-6


def test_batch_size_is_the_forward_pass(tmp_path, model):
    a = write_scene(tmp_path / "a_20240501.tif", size=(768, 512), seed=1)
    result = run(tmp_path, [a], model, tmp_path / "out.gpkg", batch_size=4)
    assert result.stats.forward_batch == 4 and result.stats.batch_size == 4


@pytest.mark.parametrize("change", ["runtime", "band_order", "min_valid", "mask_values", "threshold"])
def test_resuming_with_anything_that_changes_results_is_refused(tmp_path, model, change):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(768, 512), cloud_box=(0, 100, 0, 100))
    out = tmp_path / "out.gpkg"
    run(tmp_path, [scene], model, out)
    same = run(tmp_path, [scene], model, out)  # the same command resumes: nothing to redo
    assert same.stats.chips_resumed == 6 and same.stats.chips_processed == 0
    before = scores(out)
    kwargs = {"runtime": {"runtime": "torchscript"},
              "band_order": {"band_order": ("green", "red", "blue", "nir")},
              "min_valid": {"min_valid": 0.9},
              "mask_values": {"mask_rules": MaskRules(cloud_values=(1, 3))},
              "threshold": {}}[change]
    changed_model = model
    if change == "threshold":
        changed_model = load_model_package(with_threshold(model.root, tmp_path / "m2", 0.55))
    with pytest.raises(OutputError, match="different run") as info:
        run(tmp_path, [scene], changed_model, out, **kwargs)
    assert "--overwrite" in info.value.hint and "another --out" in info.value.hint
    assert scores(out) == before  # nothing was merged into the earlier results


def test_overwrite_keeps_the_old_output_when_the_runtime_cannot_be_built(tmp_path, model):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(768, 512))
    out = tmp_path / "out.gpkg"
    run(tmp_path, [scene], model, out)
    before = scores(out)
    broken = tmp_path / "broken"
    shutil.copytree(model.root, broken)
    doc = json.loads((broken / "model.json").read_text())
    doc["properties"]["mlm:architecture"] = "resnet18-w16"  # the weights do not fit this architecture
    (broken / "model.json").write_text(json.dumps(doc))
    with pytest.raises(GroundbreakError):
        run(tmp_path, [scene], load_model_package(broken), out, overwrite=True)
    assert scores(out) == before
    assert not list(tmp_path.glob(".out.new-*.gpkg"))  # the staged file is gone too


def test_overwrite_replaces_the_output_only_once_a_batch_is_committed(tmp_path, model):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(768, 512))
    out = tmp_path / "out.gpkg"
    run(tmp_path, [scene], model, out)
    before = scores(out)
    cancel = CancelToken()
    cancel.cancel("test: stop before anything is decided")
    result = run(tmp_path, [scene], model, out, overwrite=True, min_valid=0.9, cancel=cancel)
    assert result.status == "cancelled" and scores(out) == before
    replaced = run(tmp_path, [scene], model, out, overwrite=True, min_valid=0.9)
    assert replaced.status == "ok" and replaced.stats.chips_resumed == 0 and len(scores(out)) == 6


def test_a_new_output_is_not_left_behind_when_the_run_cannot_start(tmp_path, model):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(768, 512))
    cancel = CancelToken()
    cancel.cancel("test")
    run(tmp_path, [scene], model, tmp_path / "out.gpkg", cancel=cancel)
    assert not (tmp_path / "out.gpkg").exists() and not list(tmp_path.glob(".out.new-*"))


def test_an_attempt_that_fails_midway_is_recorded_failed(tmp_path, model, monkeypatch):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(768, 512))
    out = tmp_path / "out.gpkg"
    from groundbreak.pipeline import batches

    real_infer = batches.infer
    calls = []

    def infer_then_fail(*args, **kwargs):  # a bug in the second batch: the first is already committed
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(batches, "infer", infer_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, [scene], model, out, batch_size=2)
    conn = sqlite3.connect(str(out))
    try:
        assert [r[0] for r in conn.execute("SELECT status FROM runs")] == ["failed"]
        assert conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0] == 2
    finally:
        conn.close()
    monkeypatch.setattr(batches, "infer", real_infer)
    again = run(tmp_path, [scene], model, out, batch_size=2)  # the same command resumes
    assert again.status == "ok" and again.stats.chips_resumed == 2 and len(scores(out)) == 6
    assert np.isfinite(list(scores(out).values())).all()


@pytest.mark.parametrize("runtime", ["openvino", "openvino-int8"])
def test_concurrent_streams_give_the_scores_and_order_of_one_stream(tmp_path, model, runtime):
    # Two forward passes in flight (two 1-thread OpenVINO streams) must change speed only.
    scenes = [write_scene(tmp_path / ("%s_2024050%d.tif" % (n, i + 1)), size=(1024, 768), seed=i)
              for i, n in enumerate("ab")]
    one = run(tmp_path, scenes, model, tmp_path / "one.gpkg", runtime=runtime, threads=2, streams=1, batch_size=2,
              force_runtime=True)
    two = run(tmp_path, scenes, model, tmp_path / "two.gpkg", runtime=runtime, threads=2, streams=2, batch_size=2,
              force_runtime=True)
    assert one.stats.chips_inferred == two.stats.chips_inferred == 12  # six batches
    assert scores(one.output) == scores(two.output)  # bit-identical
    conn = sqlite3.connect(str(two.output))
    try:  # committed in submission order: chip rows in the same order as the one-stream run
        order_two = [r for r in conn.execute("SELECT scene_id, chip_id FROM chips ORDER BY rowid")]
    finally:
        conn.close()
    conn = sqlite3.connect(str(one.output))
    try:
        assert order_two == [r for r in conn.execute("SELECT scene_id, chip_id FROM chips ORDER BY rowid")]
    finally:
        conn.close()


def test_a_failed_forward_pass_among_streams_keeps_the_batches_before_it(tmp_path, model, monkeypatch):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(1024, 768))
    out = tmp_path / "out.gpkg"
    from groundbreak.pipeline import batches

    real_infer = batches.infer
    calls = []

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(batches, "infer", third_fails)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, [scene], model, out, runtime="openvino", threads=2, streams=2, batch_size=2)
    conn = sqlite3.connect(str(out))
    try:  # batches 1 and 2 were committed in order before the failure surfaced; nothing after it
        assert conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0] == 4
        assert [r[0] for r in conn.execute("SELECT status FROM runs")] == ["failed"]
    finally:
        conn.close()


def test_more_streams_than_threads_is_a_usage_error():
    with pytest.raises(UsageError, match="--streams must be between 1 and --threads"):
        RunOptions(threads=1, streams=2).validate()
