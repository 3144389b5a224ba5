"""``groundbreak model quantize``: int8 calibrated on real chips and validated on held-out chips,
stored in the package with its hashes; auto, hash checks, torch-free runs, the compiled-model cache."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groundbreak.chipset import load_scenes
from groundbreak.errors import ModelError, OutputError, UsageError
from groundbreak.labels import read_labels
from groundbreak.model import MODEL_JSON, default_model_path, file_sha256, load_model_package

pytest.importorskip("openvino")
pytest.importorskip("nncf")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    from groundbreak.world import generate_world, test_spec

    root = tmp_path_factory.mktemp("worlds")
    return generate_world(root / "w1", test_spec(1)), generate_world(root / "w2", test_spec(2))


@pytest.fixture(scope="module")
def quantized(worlds, tmp_path_factory):
    """The default model quantized through the CLI: calibrated on world 1, validated on world 2."""
    w1, w2 = worlds
    tmp = tmp_path_factory.mktemp("q")
    src = tmp / "src"
    shutil.copytree(default_model_path(), src)
    env = dict(os.environ, GROUNDBREAK_CACHE=str(tmp / "cache"), XDG_CACHE_HOME=str(tmp / "xdg"))
    cmd = [sys.executable, "-m", "groundbreak", "model", "quantize", str(src), "--labels", str(w1.labels_gpkg),
           "--scenes", *map(str, w1.scene_paths), "--holdout-labels", str(w2.labels_gpkg),
           "--holdout-scenes", str(w2.scene_paths[0].parent), "--holdout-name", "test world 2 (unseen)",
           "--holdout-unseen", "--calibration-chips", "32", "--out", str(tmp / "pkg"), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    return load_model_package(tmp / "pkg"), json.loads(res.stdout), src


def _held_out(pkg, w2):
    from groundbreak.quantize import labelled_chips

    chips, _ = labelled_chips(pkg, load_scenes([str(p) for p in w2.scene_paths]), read_labels(w2.labels_gpkg))
    return chips


def _copy(pkg, dst: Path):
    shutil.copytree(pkg.root, dst)
    return dst


def _edit(root: Path, change) -> None:
    meta = root / MODEL_JSON
    doc = json.loads(meta.read_text())
    change(doc["properties"])
    meta.write_text(json.dumps(doc, indent=2))


def test_the_package_carries_hash_checked_ir_and_the_figures(quantized):
    pkg, out, src = quantized
    assert set(pkg.artifacts) == {"openvino", "openvino-int8"}
    for art in pkg.artifacts.values():
        assert art.weights_sha256 == pkg.sha256 == load_model_package(src).sha256  # the weights did not change
        assert file_sha256(pkg.root / art.xml) == art.xml_sha256 and file_sha256(pkg.root / art.bin) == art.bin_sha256
        assert stat.S_IMODE((pkg.root / art.bin).stat().st_mode) & 0o044  # others may read a shared package
    cal = pkg.artifacts["openvino-int8"].calibration
    assert cal["chips"] <= 32 and cal["positive_chips"] >= 1 and "world_1" in cal["data"]
    rec = pkg.runtime_validation["openvino-int8"]
    assert pkg.artifacts["openvino-int8"].validation["openvino-int8"] == rec  # the IR carries its figures too
    assert rec.data == "test world 2 (unseen)" and rec.seen_in_training is False and rec.artifact == "openvino-int8"
    assert rec.chips == out["held_out_chips"] and rec.reference_runtime == "eager"
    assert rec.passed == (rec.f1 >= rec.reference_f1 - 0.01)
    assert pkg.runtime_validation["openvino"].passed and pkg.runtime_validation["openvino"].max_abs_dscore < 1e-4
    assert "torch-int8" in pkg.runtime_validation  # an unrelated record is kept
    card = pkg.card_path.read_text()
    assert "## Runtimes" in card and "| openvino-int8 | %.3f |" % rec.f1 in card and "not seen in training" in card
    doc = json.loads((pkg.root / MODEL_JSON).read_text())
    assert doc["assets"]["openvino-int8-xml"]["roles"] == ["mlm:model"]
    assert doc["assets"]["openvino-int8-bin"]["file:checksum"] == "1220" + pkg.artifacts["openvino-int8"].bin_sha256


def test_the_recorded_figures_are_what_the_runtimes_score(quantized, worlds, tmp_path):
    from groundbreak.inference import Predictor

    pkg, _, _ = quantized
    held = _held_out(pkg, worlds[1])
    x = held.x.astype(np.float32)
    ref = Predictor(pkg, runtime="eager", cache_dir=tmp_path).predict_normalised(x).scores
    got = Predictor(pkg, runtime="openvino-int8", force=True, cache_dir=tmp_path).predict_normalised(x).scores
    rec = pkg.runtime_validation["openvino-int8"]
    y, hit = held.y > 0.5, got >= pkg.threshold
    tp, fp, fn = np.sum(hit & y), np.sum(hit & ~y), np.sum(~hit & y)
    assert rec.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert rec.max_abs_dscore == pytest.approx(float(np.max(np.abs(got - ref))), abs=1e-5)
    assert rec.max_abs_dscore > 0  # int8 really is another computation


def test_auto_runs_int8_only_where_its_record_passed(quantized, tmp_path):
    from groundbreak.inference import Predictor

    pkg, _, _ = quantized
    passed = _copy(pkg, tmp_path / "passed")
    _edit(passed, lambda p: p["groundbreak:runtime_validation"]["openvino-int8"].update(passed=True))
    p = Predictor(load_model_package(passed), cache_dir=tmp_path / "c")
    assert (p.runtime, p.source, p.precision) == ("openvino-int8", "package IR", "int8")
    failed = _copy(pkg, tmp_path / "failed")
    _edit(failed, lambda p: p["groundbreak:runtime_validation"]["openvino-int8"].update(passed=False, f1=0.2))
    q = Predictor(load_model_package(failed), cache_dir=tmp_path / "c")
    assert q.runtime == "openvino" and q.source == "package IR"
    assert "failed validation" in q.rejected["openvino-int8"]
    with pytest.raises(UsageError, match="F1 0.200"):
        Predictor(load_model_package(failed), runtime="openvino-int8", cache_dir=tmp_path / "c")


def test_an_artifact_that_does_not_match_its_hash_is_refused(quantized, tmp_path):
    from groundbreak.inference import Predictor

    pkg, _, _ = quantized
    root = _copy(pkg, tmp_path / "tampered")
    _edit(root, lambda p: p["groundbreak:runtime_validation"]["openvino-int8"].update(passed=True))
    with open(root / pkg.artifacts["openvino-int8"].bin, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x7f\x7f\x7f\x7f")
    tampered = load_model_package(root)  # the weights are intact: the package loads
    with pytest.raises(ModelError, match="does not match model.json"):
        Predictor(tampered, runtime="openvino-int8", cache_dir=tmp_path / "c")
    p = Predictor(tampered, cache_dir=tmp_path / "c")
    assert p.runtime == "openvino" and "does not match" in p.rejected["openvino-int8"]
    stale = _copy(pkg, tmp_path / "stale")
    _edit(stale, lambda p: p["groundbreak:artifacts"]["openvino"].update(weights_sha256="0" * 64))
    with pytest.raises(ModelError, match="made from other weights"):
        Predictor(load_model_package(stale), runtime="openvino", cache_dir=tmp_path / "c")


_RUN = """
import json, sys
import numpy as np
from groundbreak.inference import Predictor
from groundbreak.model import load_model_package
p = Predictor(load_model_package(sys.argv[1]), runtime=sys.argv[2], threads=2)
chips = np.random.default_rng(5).integers(200, 3000, size=(8, 4, 256, 256)).astype(np.uint16)
pred = p.predict(chips, "uint16")
heavy = sorted(m for m in ("torch", "nncf", "safetensors.torch") if m in sys.modules)
print(json.dumps({"runtime": p.runtime, "source": p.source, "from_cache": p.from_cache, "heavy": heavy,
                  "scores": pred.scores.tobytes().hex(), "cells": pred.cells.tobytes().hex()}))
"""


def _run(root: Path, runtime: str, cache: Path) -> dict:
    env = dict(os.environ, GROUNDBREAK_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", _RUN, str(root), runtime], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_run_on_the_package_ir_imports_neither_torch_nor_nncf(quantized, tmp_path):
    pkg, _, _ = quantized
    root = _copy(pkg, tmp_path / "p")
    _edit(root, lambda p: p["groundbreak:runtime_validation"]["openvino-int8"].update(passed=True))
    for runtime in ("auto", "openvino"):
        got = _run(root, runtime, tmp_path / "cache")
        assert got["source"] == "package IR" and got["heavy"] == [], got


def test_groundbreak_run_on_the_package_ir_works_where_torch_and_nncf_cannot_be_imported(quantized, worlds,
                                                                                         tmp_path):
    pkg, _, _ = quantized
    root = _copy(pkg, tmp_path / "p")
    _edit(root, lambda p: p["groundbreak:runtime_validation"]["openvino-int8"].update(passed=True))
    code = ("import sys; sys.modules['torch'] = None; sys.modules['nncf'] = None\n"
            "from groundbreak.cli import main\nmain(sys.argv[1:])\n")
    w2 = worlds[1]
    args = ["run", "--aoi", str(w2.aoi), "--scenes", str(w2.scene_paths[0].parent), "--model", str(root),
            "--out", str(tmp_path / "out.gpkg"), "--events", "jsonl"]
    env = dict(os.environ, GROUNDBREAK_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = [json.loads(line) for line in res.stdout.splitlines() if '"result"' in line][-1]
    assert result["stats"]["runtime"] == "openvino-int8" and result["stats"]["chips_inferred"] > 0


def test_the_cached_compiled_model_gives_the_same_scores_in_every_process(quantized, tmp_path):
    pkg, _, _ = quantized
    cache = tmp_path / "cache"
    first, second, third = (_run(pkg.root, "openvino-int8", cache) for _ in range(3))
    assert not first["from_cache"] and second["from_cache"] and third["from_cache"]  # a warm load
    assert first["scores"] == second["scores"] == third["scores"] and first["cells"] == second["cells"]
    assert list((cache / "openvino").glob("compiled-*/*"))


def test_republishing_carries_the_artifacts_over_only_for_the_same_weights(quantized, tmp_path):
    from groundbreak.artifacts import copy_artifacts
    from groundbreak.modelpack import make_random_package, write_model_package
    from groundbreak.torch_runtime import load_network

    pkg, _, _ = quantized
    again = write_model_package(tmp_path / "again", load_network(pkg), model_id=pkg.model_id, version="9.9.9",
                                demo=True, threshold=pkg.threshold)
    assert not again.artifacts
    carried = copy_artifacts(pkg, again.root)
    assert carried.artifacts == pkg.artifacts and carried.runtime_validation == pkg.runtime_validation
    assert "## Runtimes" in carried.card_path.read_text()
    other = make_random_package(tmp_path / "other", seed=4)
    with pytest.raises(ModelError, match="weights differ"):
        copy_artifacts(pkg, other.root)


def test_model_publish_carries_the_ir_files_and_the_runtimes_section(quantized, tmp_path):
    from groundbreak.evaluate import publish
    from groundbreak.inference import artifact_files

    pkg, _, _ = quantized
    out = publish(pkg.root, tmp_path / "published", {}, command="test")
    assert out.artifacts == pkg.artifacts
    for art in out.artifacts.values():
        artifact_files(out, art)  # present and hash-checked in the published copy
    assert "## Runtimes" in out.card_path.read_text()


def test_held_out_chips_without_construction_are_refused(quantized):
    from groundbreak.quantize import LabelledChips, quantize_package

    pkg, _, _ = quantized
    x = np.zeros((4, 4, pkg.chip_size, pkg.chip_size), np.float32)
    cal = LabelledChips(x, np.array([1.0, 0, 0, 0]), "some chips")
    with pytest.raises(UsageError, match="hold no construction"):
        quantize_package(pkg, cal, LabelledChips(x, np.zeros(4), "background only"))


def test_an_existing_out_folder_is_not_overwritten(quantized, tmp_path):
    from groundbreak.quantize import LabelledChips, quantize_package

    pkg, _, _ = quantized
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    x = np.zeros((2, 4, pkg.chip_size, pkg.chip_size), np.float32)
    chips = LabelledChips(x, np.array([1.0, 0.0]), "two chips")
    with pytest.raises(OutputError, match="not empty"):
        quantize_package(pkg, chips, chips, out=tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_calibration_subset_takes_positives_first_up_to_half():
    from groundbreak.quantize import LabelledChips, calibration_subset

    y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], np.float32)
    chips = LabelledChips(np.zeros((10, 1, 1, 1), np.float32), y, "ten")
    pick = calibration_subset(chips, 4, seed=1)
    assert len(pick) == 4 and int(y[pick].sum()) == 2  # half positives
    assert list(pick) == list(calibration_subset(chips, 4, seed=1))  # seeded
    assert int(y[calibration_subset(chips, 10)].sum()) == 3  # all when n covers everything
    assert len(calibration_subset(LabelledChips(chips.x[:2], np.array([1.0, 1.0]), "two"), 4)) == 2
