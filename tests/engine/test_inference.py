"""Predictor: outputs, determinism, band checks, runtimes' parity with eager fp32, safe weight loading."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from groundbreak.errors import BandMismatchError, DependencyError, ModelError, UsageError
from groundbreak.inference import DEFAULT_TOLERANCE, RUNTIMES, Predictor, synthetic_inputs
from groundbreak.model import MODEL_JSON, WEIGHTS_FILE, file_sha256, load_model_package
from groundbreak.modelpack import make_random_package, random_chips
from groundbreak.network import ARCHITECTURES, build_network, load_weights

# Max |Δscore| vs eager per runtime precision on a random package. fp32 runtimes only reorder float
# sums. Random weights are far more sensitive to bf16/int8 rounding than trained ones (see
# inference.py), so those get looser bounds here; `auto` applies DEFAULT_TOLERANCE to every runtime.
FP32_TOLERANCE = 1e-3
BF16_TOLERANCE = 0.05
INT8_TOLERANCE = 0.25
CAL = 32  # calibration chips: enough to exercise the path, few enough to keep the file fast
SIZE = 64  # small chips (4 x 4 cells) keep runtime builds and calibration quick on 2 shared cores


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    return make_random_package(tmp_path_factory.mktemp("pkg") / "random", seed=0, width=8, chip_size=SIZE)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def eager(pkg, cache):
    return Predictor(pkg, runtime="eager", cache_dir=cache)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    return random_chips(16, size=SIZE, seed=3)


def test_prediction_shapes_and_ranges(eager, chips):
    pred = eager.predict(chips, "uint16")
    assert pred.scores.shape == (16,) and pred.scores.dtype == np.float32
    assert pred.cells.shape == (16, 4, 4) and pred.cells.dtype == np.float32
    assert np.all((pred.scores > 0) & (pred.scores < 1))
    assert np.all((pred.cells >= 0) & (pred.cells <= 1))
    # A random package spreads scores: a network that saturates would make parity tests vacuous.
    assert pred.scores.std() > 1e-3 and pred.cells.std() > 0.05


def test_same_input_same_scores(pkg, eager, chips, cache):
    a = eager.predict(chips, "uint16")
    b = eager.predict(chips.copy(), "uint16")
    c = Predictor(pkg, runtime="eager", cache_dir=cache).predict(chips, "uint16")
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.scores, c.scores)
    np.testing.assert_array_equal(a.cells, c.cells)


def test_batching_does_not_change_results(pkg, eager, chips, cache):
    small = Predictor(pkg, runtime="eager", batch_size=4, cache_dir=cache)
    a, b = eager.predict(chips[:6], "uint16"), small.predict(chips[:6], "uint16")  # 6 = 4 + 2
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.cells, b.cells, atol=1e-5)
    one = eager.predict(chips[2:3], "uint16")
    np.testing.assert_allclose(one.scores[0], a.scores[2], atol=1e-5)


def test_dtype_scaling_gives_the_same_scores_for_the_same_reflectance(eager, chips):
    as_float = chips.astype(np.float32) / 10000.0
    np.testing.assert_allclose(
        eager.predict(chips, "uint16").scores, eager.predict(as_float, "float32").scores, atol=1e-4
    )
    # uint16 values read as if they were uint8 (scaled by 1/255) are a different input.
    assert not np.allclose(eager.predict(chips, "uint16").scores, eager.predict(chips, "uint8").scores, atol=1e-3)


def test_empty_batch(eager):
    pred = eager.predict(np.zeros((0, 4, SIZE, SIZE), np.uint16), "uint16")
    assert pred.scores.shape == (0,) and pred.cells.shape == (0, 4, 4)


def test_band_count_mismatch(eager):
    with pytest.raises(BandMismatchError, match=r"3 bands .* expects 4 bands \(red, green, blue, nir\)"):
        eager.predict(np.zeros((2, 3, SIZE, SIZE), np.uint16), "uint16")


def test_wrong_chip_size_and_rank(eager):
    with pytest.raises(UsageError, match="128x128 px but model .* takes 64x64"):
        eager.predict(np.zeros((1, 4, 128, 128), np.uint16), "uint16")
    with pytest.raises(UsageError, match=r"\(N, bands, H, W\)"):
        eager.predict(np.zeros((4, SIZE, SIZE), np.uint16), "uint16")


def test_unknown_runtime(pkg):
    with pytest.raises(UsageError, match="unknown inference runtime 'tensorrt'"):
        Predictor(pkg, runtime="tensorrt")


def test_timing_counters(pkg, chips, cache):
    p = Predictor(pkg, runtime="eager", cache_dir=cache)
    assert p.timing.calls == 0 and p.timing.chips == 0
    p.predict(chips, "uint16")
    p.predict(chips[:2], "uint16")
    t = p.timing
    assert (t.runtime, t.calls, t.chips) == ("eager", 2, 18)
    assert t.model_seconds > 0 and t.preprocess_seconds > 0 and t.chips_per_second > 0
    p.reset_timing()
    assert p.timing.chips == 0


def test_threads_are_set_explicitly(pkg, cache):
    before = torch.get_num_threads()
    try:
        p = Predictor(pkg, runtime="eager", threads=1, cache_dir=cache)
        torch.set_num_threads(2)
        p.predict(random_chips(1, size=SIZE), "uint16")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "eager"])
def test_runtime_parity_with_eager(pkg, eager, chips, cache, runtime, capfd):
    try:
        p = Predictor(pkg, runtime=runtime, cache_dir=cache, calibration_size=CAL)
    except DependencyError as exc:
        pytest.skip(f"{runtime}: {exc}")
    assert p.runtime == runtime
    # stdout carries the JSON-lines protocol: building a runtime (calibration included) prints nothing.
    assert capfd.readouterr().out == ""
    tol = {"int8": INT8_TOLERANCE, "bf16": BF16_TOLERANCE}.get(runtime.rsplit("-", 1)[-1], FP32_TOLERANCE)
    ref, got = eager.predict(chips, "uint16"), p.predict(chips, "uint16")
    assert np.max(np.abs(got.scores - ref.scores)) <= tol
    assert np.max(np.abs(got.cells - ref.cells)) <= 3 * tol
    assert p.parity[0] <= tol  # the predictor's own check batch agrees
    # Not a constant or a shuffle: the runtime follows the input, chip by chip.
    assert np.corrcoef(got.scores, ref.scores)[0, 1] > 0.9


@pytest.mark.slow
def test_auto_picks_a_runtime_within_tolerance(pkg, cache):
    p = Predictor(pkg, runtime="auto", cache_dir=cache, calibration_size=CAL)
    assert p.runtime in RUNTIMES
    assert p.parity[0] <= DEFAULT_TOLERANCE
    for name, why in p.rejected.items():
        assert name != p.runtime and why


def test_auto_falls_back_to_eager_when_nothing_is_exact_enough(pkg, tmp_path):
    p = Predictor(pkg, runtime="auto", tolerance=-1.0, candidates=("torchscript",), cache_dir=tmp_path)
    assert p.runtime == "eager"
    assert "outside tolerance" in p.rejected["torchscript"]


def test_explicit_runtime_outside_tolerance_is_kept_with_a_warning(pkg, cache, caplog):
    with caplog.at_level("WARNING", logger="groundbreak.inference"):
        p = Predictor(pkg, runtime="torchscript", tolerance=-1.0, cache_dir=cache)
    assert p.runtime == "torchscript"
    assert "would not have chosen it" in caplog.text


def test_auto_decision_is_cached(pkg, tmp_path):
    first = Predictor(pkg, runtime="auto", candidates=("torchscript",), cache_dir=tmp_path)
    assert not first.auto_cached and first.runtime == "torchscript"
    assert len(list((tmp_path / "auto").glob("*.json"))) == 1
    second = Predictor(pkg, runtime="auto", candidates=("torchscript",), cache_dir=tmp_path)
    assert second.auto_cached and second.runtime == first.runtime
    # Another tolerance is another decision.
    third = Predictor(pkg, runtime="auto", candidates=("torchscript",), tolerance=0.5, cache_dir=tmp_path)
    assert not third.auto_cached


def test_missing_runtime_dependency_names_the_pip_command(pkg, cache, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(DependencyError, match="'openvino'") as err:
        Predictor(pkg, runtime="openvino", cache_dir=cache)
    assert "pip install" in err.value.hint
    p = Predictor(pkg, runtime="auto", candidates=("openvino", "torchscript"), cache_dir=tmp_path)
    assert p.runtime == "torchscript" and "not installed" in p.rejected["openvino"]


@pytest.mark.slow
def test_openvino_int8_is_cached_per_weights(pkg, chips, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    first = Predictor(pkg, runtime="openvino-int8", cache_dir=tmp_path, calibration_size=CAL)
    entries = [p for p in (tmp_path / "openvino-int8").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and re.fullmatch(r"[0-9a-f]{20}", entries[0].name)  # named by a hash only
    assert {p.name for p in entries[0].iterdir()} == {"model.xml", "model.bin", "manifest.json"}
    stamp = (entries[0] / "model.bin").stat().st_mtime_ns
    second = Predictor(pkg, runtime="openvino-int8", cache_dir=tmp_path, calibration_size=CAL)
    assert (entries[0] / "model.bin").stat().st_mtime_ns == stamp  # read back, not calibrated again
    np.testing.assert_array_equal(first.predict(chips).scores, second.predict(chips).scores)


@pytest.mark.slow
def test_a_damaged_int8_cache_entry_is_rebuilt_not_used(pkg, chips, tmp_path):
    pytest.importorskip("nncf")
    good = Predictor(pkg, runtime="openvino-int8", cache_dir=tmp_path, calibration_size=CAL).predict(chips)
    (entry,) = [p for p in (tmp_path / "openvino-int8").iterdir() if not p.name.startswith(".")]
    data = bytearray((entry / "model.bin").read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # zero the second half of the weights
    (entry / "model.bin").write_bytes(bytes(data))
    again = Predictor(pkg, runtime="openvino-int8", cache_dir=tmp_path, calibration_size=CAL).predict(chips)
    np.testing.assert_array_equal(good.scores, again.scores)


_SCORES = """
import json, sys
import numpy as np
from groundbreak.inference import Predictor
from groundbreak.model import load_model_package
from groundbreak.modelpack import random_chips
package, runtime, cache, cal, size = sys.argv[1:6]
p = Predictor(load_model_package(package), runtime=runtime, cache_dir=cache, calibration_size=int(cal))
pred = p.predict(random_chips(16, size=int(size), seed=3))
print(json.dumps([pred.scores.tobytes().hex(), pred.cells.tobytes().hex()]))
"""


def _scores_in_processes(pkg, runtime: str, caches: Sequence[Path]) -> List[tuple]:
    """Scores and cells (as bytes) from one fresh process per cache folder, all started at once."""
    procs = [subprocess.Popen([sys.executable, "-c", _SCORES, str(pkg.root), runtime, str(c), str(CAL), str(SIZE)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in caches]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(tuple(json.loads(stdout.strip().splitlines()[-1])))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino-int8", "openvino"])
def test_same_scores_across_loads_and_processes(pkg, chips, tmp_path, runtime):
    """The same package, runtime and input give bit-identical scores in every load and every process
    (the int8 model calibrated by one process is the one every other process runs)."""
    pytest.importorskip("openvino")
    if runtime == "openvino-int8":
        pytest.importorskip("nncf")
    shared = tmp_path / "shared"
    loads = [Predictor(pkg, runtime=runtime, cache_dir=shared, calibration_size=CAL) for _ in range(4)]
    here = {(p.predict(chips).scores.tobytes().hex(), p.predict(chips).cells.tobytes().hex()) for p in loads}
    assert len(here) == 1
    # Two processes reading the cache this one wrote, and two that start together on one empty cache
    # (both calibrate, and race to store the entry): every one of them computes the same bytes.
    fresh = tmp_path / "fresh"
    assert set(_scores_in_processes(pkg, runtime, [shared, shared, fresh, fresh])) == here


def test_batch_size_is_the_forward_pass(pkg, chips, cache):
    five = Predictor(pkg, runtime="eager", batch_size=5, cache_dir=cache)
    assert five.forward_batch == 5
    got = five.predict(chips[:12], "uint16")  # 5 + 5 + 2
    t = five.timing
    assert (t.forward_batch, t.forward_passes, t.largest_forward, t.chips) == (5, 3, 5, 12)
    assert t.chips_per_forward == pytest.approx(4.0)
    one = Predictor(pkg, runtime="eager", batch_size=1, cache_dir=cache)
    np.testing.assert_allclose(got.scores, one.predict(chips[:12], "uint16").scores, atol=1e-5)
    whole = Predictor(pkg, runtime="eager", batch_size=32, cache_dir=cache)
    whole.predict(np.concatenate([chips, chips]), "uint16")  # 32 chips: one pass, not two of 16
    assert (whole.timing.forward_passes, whole.timing.largest_forward) == (1, 32)


def _with_validation(pkg, tmp_path: Path, records: dict, runtime: str = "auto"):
    dst = tmp_path / "validated"
    shutil.copytree(pkg.root, dst)
    meta = dst / MODEL_JSON
    doc = json.loads(meta.read_text())
    doc["properties"]["groundbreak:runtime_validation"] = records
    doc["properties"]["groundbreak:runtime"] = runtime
    meta.write_text(json.dumps(doc))
    return load_model_package(dst)


FAILED = {"passed": False, "f1": 0.125, "reference_f1": 0.966, "reference_runtime": "eager",
          "data": "demo world 7 (unseen)", "chips": 491}


def test_a_runtime_that_failed_validation_is_refused_unless_forced(pkg, tmp_path, caplog):
    failing = _with_validation(pkg, tmp_path, {"torchscript": FAILED})
    with pytest.raises(UsageError) as err:
        Predictor(failing, runtime="torchscript", cache_dir=tmp_path)
    assert "F1 0.125 against 0.966 (eager) on demo world 7 (unseen) (491 chips)" in str(err.value)
    assert "--force-runtime" in err.value.hint and "auto" in err.value.hint
    with caplog.at_level("WARNING", logger="groundbreak.inference"):
        forced = Predictor(failing, runtime="torchscript", force=True, cache_dir=tmp_path)
    assert forced.runtime == "torchscript" and "forced although it failed validation" in caplog.text
    # auto never picks it, whatever its parity on synthetic chips.
    auto = Predictor(failing, runtime="auto", candidates=("torchscript",), cache_dir=tmp_path)
    assert auto.runtime == "eager" and "failed validation" in auto.rejected["torchscript"]


def test_the_package_runtime_is_refused_too_when_it_failed(pkg, tmp_path):
    failing = _with_validation(pkg, tmp_path, {"torchscript": FAILED}, runtime="torchscript")
    with pytest.raises(UsageError, match="failed the validation recorded"):
        Predictor(failing, cache_dir=tmp_path)


def test_auto_considers_int8_only_with_a_passing_record(pkg, tmp_path):
    plain = Predictor(pkg, runtime="auto", candidates=("torch-int8", "torchscript"), cache_dir=tmp_path / "a",
                      calibration_size=CAL)
    assert plain.runtime == "torchscript" and "validation record" in plain.rejected["torch-int8"]
    passing = {"passed": True, "f1": 0.96, "reference_f1": 0.966, "data": "held-out chips", "chips": 100}
    ok = _with_validation(pkg, tmp_path, {"torch-int8": passing})
    p = Predictor(ok, runtime="auto", candidates=("torch-int8", "torchscript"), cache_dir=tmp_path / "b",
                  calibration_size=CAL)
    # Now a candidate: chosen, or turned down by the parity check (random weights are int8-sensitive).
    assert p.runtime == "torch-int8" or "outside tolerance" in p.rejected["torch-int8"]


def test_the_default_model_refuses_torch_int8_and_runs_its_validated_int8_ir(tmp_path):
    from groundbreak.model import default_model_path

    default = load_model_package(default_model_path())
    record = default.runtime_validation["torch-int8"]  # int8 calibrated at load on synthetic chips
    assert not record.passed and record.reference_f1 == pytest.approx(0.966, abs=5e-4) and record.chips == 491
    with pytest.raises(UsageError, match="F1 0.125 against 0.966"):
        Predictor(default, runtime="torch-int8")
    # Its int8 IR was calibrated on real chips and passed on demo world 7 (unseen): auto runs it.
    ir = default.artifacts["openvino-int8"].validation["openvino-int8"]
    assert ir.passed and ir.f1 >= ir.reference_f1 - 0.01 and ir.chips == 491 and ir.seen_in_training is False
    assert default.runtime_validation["openvino-int8"].passed
    pytest.importorskip("openvino")
    p = Predictor(default, cache_dir=tmp_path)
    assert (p.runtime, p.source, p.precision) == ("openvino-int8", "package IR", "int8")


def test_cache_entries_are_hashes_in_the_groundbreak_cache(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDBREAK_CACHE", str(tmp_path / "gbc"))
    Predictor(pkg, runtime="auto", candidates=("torchscript",))
    (decision,) = (tmp_path / "gbc" / "auto").iterdir()
    assert re.fullmatch(r"[0-9a-f]{20}\.json", decision.name)


def test_real_calibration_chips_are_used(pkg, cache):
    cal = pkg.preprocess(random_chips(CAL, size=SIZE, seed=9), "uint16")
    p = Predictor(pkg, runtime="torchscript", calibration=cal, cache_dir=cache)
    assert p.parity[0] <= DEFAULT_TOLERANCE
    with pytest.raises(BandMismatchError):
        Predictor(pkg, runtime="torchscript", calibration=cal[:, :3], cache_dir=cache)


# -- network and safe loading ----------------------------------------------------------------------


def test_network_outputs_and_deterministic_init():
    a, b = build_network("resnet18-w8", 4, seed=5), build_network("resnet18-w8", 4, seed=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = build_network("resnet18-w8", 4, seed=6)
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)
    chip, cells = a.eval()(torch.from_numpy(synthetic_inputs(2, 4, 256)))
    assert chip.shape == (2,) and cells.shape == (2, 16, 16)


def test_network_trains():
    net = build_network("resnet18-w8", 4, seed=0).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.from_numpy(synthetic_inputs(4, 4, 64, seed=1))
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    losses = []
    for _ in range(5):
        chip, _cells = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(chip, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_full_size_architecture_stays_small():
    net = build_network("resnet18-w32", 4, seed=0)
    size = sum(v.numel() * v.element_size() for v in net.state_dict().values())
    assert size < 20 * 2**20


def test_unknown_architecture():
    with pytest.raises(ModelError, match="unknown model architecture 'resnet50'") as err:
        build_network("resnet50", 4)
    assert all(name in err.value.hint for name in ARCHITECTURES)


def _repackage(pkg, tmp_path: Path, write_weights) -> Path:
    """Copy ``pkg``, replace its weights via ``write_weights(path)`` and fix the sha256 in model.json."""
    dst = tmp_path / "pkg"
    shutil.copytree(pkg.root, dst)
    write_weights(dst / WEIGHTS_FILE)
    meta = dst / MODEL_JSON
    doc = json.loads(meta.read_text())
    doc["properties"]["groundbreak:weights"]["sha256"] = file_sha256(dst / WEIGHTS_FILE)
    meta.write_text(json.dumps(doc))
    return dst


def test_unexpected_weight_keys_are_refused(pkg, tmp_path):
    from safetensors.torch import load_file

    def add_key(path):
        tensors = load_file(str(path))
        tensors["backdoor.weight"] = torch.zeros(3)
        save_file(tensors, str(path))

    loaded = load_model_package(_repackage(pkg, tmp_path, add_key))  # the hash matches...
    with pytest.raises(ModelError, match="unexpected backdoor.weight"):  # ...but the keys do not
        Predictor(loaded, runtime="eager")


def test_missing_weight_keys_and_wrong_shapes_are_refused(pkg, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(pkg.weights_path))
    del tensors["chip_head.bias"]
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelError, match="missing chip_head.bias"):
        load_weights(build_network("resnet18-w8", 4), path)
    with pytest.raises(ModelError, match="shapes do not match"):
        load_weights(build_network("resnet18-w16", 4), pkg.weights_path)


class _Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_named_weights_is_refused_without_running_it(pkg, tmp_path):
    marker = tmp_path / "pwned"
    evil = _Exploit()
    evil.marker = marker

    def write_pickle(path):
        with open(path, "wb") as fh:
            pickle.dump({"stem.0.weight": evil}, fh)

    loaded = load_model_package(_repackage(pkg, tmp_path, write_pickle))
    with pytest.raises(ModelError, match="not a readable safetensors file") as err:
        Predictor(loaded, runtime="eager")
    assert "pickle" in err.value.hint
    assert not marker.exists()


# -- start-up: no torch at import, converted IR and compiled models cached, loading in the background -----


def test_importing_the_predictor_imports_neither_torch_nor_nncf():
    code = ("import sys, groundbreak.inference, groundbreak.openvino_runtime; "
            "bad = [m for m in ('torch', 'nncf') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_openvino_converts_once_and_warm_loads_the_compiled_model(pkg, chips, tmp_path):
    pytest.importorskip("openvino")
    cold = Predictor(pkg, runtime="openvino", cache_dir=tmp_path)
    assert cold.source == "cached IR" and not cold.from_cache
    (ir,) = (tmp_path / "openvino").glob("ir-*")
    stamp = (ir / "model.bin").stat().st_mtime_ns
    warm = Predictor(pkg, runtime="openvino", cache_dir=tmp_path)
    assert warm.from_cache and (ir / "model.bin").stat().st_mtime_ns == stamp  # no second conversion
    assert list((tmp_path / "openvino").glob("compiled-*/*"))
    np.testing.assert_array_equal(cold.predict(chips).scores, warm.predict(chips).scores)


def test_a_predictor_can_load_in_the_background(pkg, chips, cache):
    from groundbreak.inference import start_predictor

    future = start_predictor(pkg, runtime="eager", cache_dir=cache)
    got = future.result(timeout=300).predict(chips, "uint16").scores
    np.testing.assert_array_equal(got, Predictor(pkg, runtime="eager", cache_dir=cache).predict(chips, "uint16").scores)
    refused = start_predictor(pkg, runtime="tensorrt")
    with pytest.raises(UsageError, match="unknown inference runtime"):
        refused.result(timeout=60)  # the build's error reaches the caller
