"""Evaluation: known answers with fake predictors, false alarms per km² per date, report files, publish,
and the default model's recipe against the shipped package."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from groundbreak.chipset import load_scenes
from groundbreak.errors import OutputError, UsageError
from groundbreak.evaluate import Evaluation, evaluate, metrics_from_reports, publish, write_report
from groundbreak.labels import read_labels
from groundbreak.metrics import pr_curve

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "resources" / "models" / "groundbreak-demo"
RECIPE = ROOT / "scripts" / "train_default_model.sh"

CHIP_KM2 = 0.512 ** 2


@dataclass
class _Scores:
    scores: np.ndarray


class ConstantPredictor:
    """Scores every chip the same: recall 1 (or 0), precision = base rate, FA = every negative chip."""

    runtime = "fake"

    def __init__(self, score: float) -> None:
        self.score = score
        self.calls = 0

    def predict(self, chips, dtype):
        self.calls += 1
        assert chips.ndim == 4 and chips.shape[1] == 4 and dtype in ("uint8", "uint16")
        return _Scores(np.full(len(chips), self.score))


class BrightPredictor:
    """A transparent rule: the score is the share of bright pixels (cleared soil is bright)."""

    runtime = "fake"

    def predict(self, chips, dtype):
        refl = chips.astype(np.float64) / (255.0 if dtype == "uint8" else 10000.0)
        return _Scores((refl[:, 0] > 0.2).mean(axis=(1, 2)) * 5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from groundbreak.world import generate_world, test_spec

    return generate_world(tmp_path_factory.mktemp("world") / "w", test_spec(1))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from groundbreak.modelpack import make_random_package

    return make_random_package(tmp_path_factory.mktemp("pkg") / "p", width=8, threshold=0.5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _truth(world, package):
    """Positive chip-dates by `groundbreak demo`'s own truth rule (an independent implementation)."""
    from groundbreak.demo import _truth_chips
    from groundbreak.grid import ChipGrid

    grid = ChipGrid(epsg=32614, chip_px=package.chip_size, gsd=package.gsd)
    return {(d, c) for d, chips in _truth_chips(world, grid).items() for c in chips}


def test_constant_predictor_known_answer_on_a_world(world, package, cache):
    scenes = load_scenes([str(p) for p in world.scene_paths])
    ev = evaluate(package, scenes, read_labels(world.labels_gpkg), predictor=ConstantPredictor(0.9), cache_dir=cache)
    s = ev.summary()
    truth = _truth(world, package)
    scored = set(zip(ev.dates, ev.chip_ids))
    assert {(d, c) for d, c in scored if (d, c) in truth} == {
        (d, c) for d, c, y in zip(ev.dates, ev.chip_ids, ev.y) if y > 0.5}
    assert s["positives"] >= 2
    assert s["tp"] == s["positives"] and s["fn"] == 0 and s["recall"] == 1.0
    assert s["precision"] == pytest.approx(s["positives"] / s["chips"])
    assert s["fp"] == s["chips"] - s["positives"]
    km2 = s["chips"] * CHIP_KM2
    assert s["false_alarms_per_km2_per_date"]["pooled"] == pytest.approx(s["fp"] / km2)
    per_date = ev.per_date()
    assert [d.date for d in per_date] == list(world.dates)
    assert sum(d.chips for d in per_date) == s["chips"]
    assert max(d.false_alarms_per_km2 for d in per_date) == pytest.approx(s["false_alarms_per_km2_per_date"]["max"])
    assert s["dropped"]  # the nodata edge and clouds are screened as in a run
    silent = evaluate(package, scenes, read_labels(world.labels_gpkg), predictor=ConstantPredictor(0.1),
                      cache_dir=cache).summary()
    assert silent["tp"] == silent["fp"] == 0 and silent["recall"] == 0.0 and silent["f1"] == 0.0
    assert math.isnan(silent["precision"])  # nothing predicted: precision is undefined, not 0 or 1
    assert silent["false_alarms_per_km2_per_date"]["pooled"] == 0.0


def test_negative_scenes_count_every_detection_as_a_false_alarm(world, package, cache):
    scenes = load_scenes([str(world.scene_paths[0])])
    ev = evaluate(package, [], None, negatives=scenes, predictor=ConstantPredictor(0.7), cache_dir=cache)
    s = ev.summary()
    assert s["positives"] == 0 and s["fp"] == s["chips"] > 0
    neg = s["negative_scenes"]
    assert neg["false_alarms"] == s["chips"] and neg["dates"] == 1
    assert neg["false_alarms_per_km2_per_date"] == pytest.approx(1 / CHIP_KM2)  # one per chip of 0.262 km²
    assert np.isnan(s["pr_auc"])


def test_metrics_on_a_crafted_evaluation():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)
    scores = np.array([0.9, 0.8, 0.3, 0.85, 0.2, 0.1, 0.6, 0.05])
    ev = Evaluation("m", "x" * 64, True, 0.5, y, scores, tuple("abcdefgh"), ("s1",) * 4 + ("s2",) * 4,
                    ("2024-01-01",) * 4 + ("2024-02-01",) * 4, np.zeros(8, bool), CHIP_KM2, {}, 0)
    s = ev.summary()
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 2, 1, 3)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(4 / 7)
    # ranking 0.9+ 0.85- 0.8+ 0.6- 0.3+ ...: AP = (1/1 + 2/3 + 3/5) / 3
    assert s["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    d1, d2 = ev.per_date()
    assert (d1.false_positives, d2.false_positives) == (1, 1)
    assert d1.false_alarms_per_km2 == pytest.approx(1 / (4 * CHIP_KM2))
    p, r, t = pr_curve(y, scores)
    assert p[0] == 1.0 and r[-1] == 1.0 and list(t) == sorted(t, reverse=True)


def test_report_files_and_json(world, package, cache, tmp_path):
    scenes = load_scenes([str(p) for p in world.scene_paths])
    ev = evaluate(package, scenes, read_labels(world.labels_gpkg), predictor=BrightPredictor(), cache_dir=cache)
    paths = write_report(ev, tmp_path / "report")
    for key in ("pr_curve", "score_histogram", "confusion_matrix"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    doc = json.loads(paths["report"].read_text())
    assert doc["summary"]["chips"] == len(ev.y) and doc["model"]["demo"] is True
    assert len(doc["per_date"]) == 3 and doc["inputs"]["runtime"] == "fake"
    from groundbreak.metrics import average_precision

    assert doc["summary"]["pr_auc"] == pytest.approx(average_precision(ev.y, ev.scores))
    assert doc["summary"]["f1"] == pytest.approx(ev.summary()["f1"]) and doc["summary"]["tp"] > 0
    neg_only = evaluate(package, [], None, negatives=scenes[:1], predictor=ConstantPredictor(0.1), cache_dir=cache)
    doc = json.loads(write_report(neg_only, tmp_path / "neg")["report"].read_text())
    # undefined figures are null (NaN is not JSON): no positives, no detections
    assert doc["summary"]["recall"] is None and doc["summary"]["pr_auc"] is None
    assert doc["summary"]["precision"] is None and doc["summary"]["f1"] is None


def test_real_predictor_runs_on_the_world(world, package, cache):
    scenes = load_scenes([str(world.scene_paths[-1])])
    ev = evaluate(package, scenes, read_labels(world.labels_gpkg), runtime="eager", cache_dir=cache)
    assert ev.inputs["runtime"] == "eager"
    assert ((0 <= ev.scores) & (ev.scores <= 1)).all() and ev.scores.std() > 0


# -- publishing ----------------------------------------------------------------------------------------
def _report(path: Path, *, chips=100, positives=10, precision=0.9, recall=0.8, f1=0.847, pr_auc=0.88, fp=1,
            pooled=0.04, runtime="eager", scenes=("w/a.tif",)) -> Path:
    """A report.json as `groundbreak evaluate --out` writes it (the fields publish reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "inputs": {"scenes": list(scenes), "negatives": [], "labels": ["w/labels.gpkg"], "min_valid": 0.5,
                   "runtime": runtime},
        "summary": {"chips": chips, "positives": positives, "precision": precision, "recall": recall, "f1": f1,
                    "pr_auc": pr_auc, "fp": fp,
                    "false_alarms_per_km2_per_date": {"pooled": pooled, "max": 0.1, "km2_dates": 26.2}}}))
    return path


def test_publish_puts_evaluation_figures_in_model_json_and_card(package, tmp_path):
    report = _report(tmp_path / "r.json")
    negatives = _report(tmp_path / "n.json", chips=50, positives=0, precision=None, recall=None, f1=None,
                        pr_auc=None, fp=0, pooled=0.0)
    out = publish(package.root, tmp_path / "pub", {"world": report, "naip": negatives}, command="make it")
    meta = json.loads((tmp_path / "pub" / "model.json").read_text())["properties"]
    assert meta["groundbreak:metrics"]["world_f1"] == pytest.approx(0.847)
    assert meta["groundbreak:metrics"]["naip_false_alarms_per_km2_per_date"] == 0.0
    assert "naip_f1" not in meta["groundbreak:metrics"] and "naip_precision" not in meta["groundbreak:metrics"]
    assert meta["groundbreak:demo"] is True and out.sha256 == package.sha256
    assert "groundbreak:runtime_validation" not in meta  # no runtime checks were given
    card = out.card_path.read_text()
    assert "make it" in card and "| world | 100 | 10 | 0.900 |" in card and "DEMO" in card
    assert "| naip | 50 | 0 | n/a | n/a | n/a | n/a | 0.0000 (0 false alarm(s)" in card
    assert "| world_f1 | 0.847 |" in card  # the Metrics section is re-written with the new figures
    assert metrics_from_reports({"world": report})["world_recall"] == pytest.approx(0.8)
    assert set(json.loads((tmp_path / "pub" / "evaluation.json").read_text())) == {"world", "naip"}


def test_publish_keeps_what_it_does_not_own_and_replaces_its_own_block(package, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(package.root, src)
    doc = json.loads((src / "model.json").read_text())
    doc["properties"]["groundbreak:future_field"] = {"written by": "a newer engine"}
    doc["assets"]["compiled"] = {"href": "./compiled.bin", "roles": ["mlm:compiled"]}
    (src / "model.json").write_text(json.dumps(doc, indent=2))
    (src / "compiled.bin").write_bytes(b"\x00compiled\xff")
    card = (src / "README.md").read_text()
    (src / "README.md").write_text(card.rstrip("\n") + "\n\n## History\nHand-written history.\n")

    first = publish(src, tmp_path / "pub", {"world": _report(tmp_path / "r1.json")}, command="first recipe")
    out = json.loads((tmp_path / "pub" / "model.json").read_text())
    assert out["properties"]["groundbreak:future_field"] == {"written by": "a newer engine"}
    assert out["properties"]["datetime"] == doc["properties"]["datetime"]  # the weights' date, not publish's
    assert out["assets"]["compiled"] == doc["assets"]["compiled"]
    assert (tmp_path / "pub" / "compiled.bin").read_bytes() == b"\x00compiled\xff"
    assert first.weights_path.read_bytes() == package.weights_path.read_bytes()
    assert "## History\nHand-written history." in first.card_path.read_text()

    # publishing again (in place) replaces its own block and figures; nothing is repeated
    with pytest.raises(OutputError, match="not empty"):
        publish(tmp_path / "pub", tmp_path / "pub", {"world": _report(tmp_path / "r2.json", f1=0.5)})
    again = publish(tmp_path / "pub", tmp_path / "pub", {"world": _report(tmp_path / "r2.json", f1=0.5)},
                    command="second recipe", overwrite=True)
    card = again.card_path.read_text()
    assert "second recipe" in card and "first recipe" not in card and card.count("Reproduce:") == 1
    assert "| world_f1 | 0.5 |" in card and "| world_f1 | 0.847 |" not in card
    assert card.count("## History") == 1 and card.count("## Notes") == 1 and card.count("## Metrics") == 1
    model_json = (tmp_path / "pub" / "model.json").read_text()
    publish(tmp_path / "pub", tmp_path / "pub", {"world": tmp_path / "r2.json"}, command="second recipe",
            overwrite=True)
    assert again.card_path.read_text() == card and (tmp_path / "pub" / "model.json").read_text() == model_json


def test_runtime_checks_become_runtime_validation_records(package, tmp_path):
    ref = _report(tmp_path / "eager.json", f1=0.9)
    int8 = _report(tmp_path / "int8.json", f1=0.5, runtime="openvino-int8")
    close = _report(tmp_path / "ts.json", f1=0.891, runtime="torchscript")  # 0.009 below: passes
    far = _report(tmp_path / "bf16.json", f1=0.889, runtime="openvino-bf16")  # 0.011 below: fails
    out = publish(package.root, tmp_path / "pub", {"world": ref},
                  runtime_checks=[("world", int8), ("world", close), ("world", far)])
    records = out.metadata["properties"]["groundbreak:runtime_validation"]
    assert records == {
        "openvino-int8": {"passed": False, "f1": 0.5, "reference_f1": 0.9, "reference_runtime": "eager",
                          "data": "world", "chips": 100},
        "torchscript": {"passed": True, "f1": 0.891, "reference_f1": 0.9, "reference_runtime": "eager",
                        "data": "world", "chips": 100},
        "openvino-bf16": {"passed": False, "f1": 0.889, "reference_f1": 0.9, "reference_runtime": "eager",
                          "data": "world", "chips": 100},
    }
    card = out.card_path.read_text()
    assert "| openvino-int8 | world | 100 | 0.500 | 0.900 (eager) | 0.400 | no |" in card
    assert "| torchscript | world | 100 | 0.891 | 0.900 (eager) | 0.009 | yes |" in card
    assert set(json.loads((tmp_path / "pub" / "evaluation.json").read_text())) == {
        "world", "world@openvino-int8", "world@torchscript", "world@openvino-bf16"}

    other_data = _report(tmp_path / "o.json", runtime="openvino", scenes=("elsewhere.tif",))
    with pytest.raises(UsageError, match="other chips than report world"):
        publish(package.root, tmp_path / "x1", {"world": ref}, runtime_checks=[("world", other_data)])
    with pytest.raises(UsageError, match="not among the reports given"):
        publish(package.root, tmp_path / "x2", {"world": ref}, runtime_checks=[("town", int8)])
    with pytest.raises(UsageError, match="not an engine runtime"):
        publish(package.root, tmp_path / "x3", {"world": ref},
                runtime_checks=[("world", _report(tmp_path / "c.json", runtime="custom"))])
    assert not (tmp_path / "x1").exists() and not (tmp_path / "x2").exists()  # refused before writing


def test_bad_reports_are_clear_errors(package, tmp_path):
    from groundbreak.errors import MissingFileError

    with pytest.raises(MissingFileError, match="missing.json"):
        publish(package.root, tmp_path / "p", {"world": tmp_path / "missing.json"})
    (tmp_path / "bad.json").write_text(json.dumps({"summary": {}}))
    with pytest.raises(UsageError, match="not a `groundbreak evaluate` report.json"):
        publish(package.root, tmp_path / "p", {"world": tmp_path / "bad.json"})
    with pytest.raises(UsageError, match="metric prefix"):
        publish(package.root, tmp_path / "p", {"demo world": _report(tmp_path / "r.json")})


def test_the_old_module_entry_is_a_deprecated_alias(package, tmp_path):
    report = _report(tmp_path / "r.json")
    proc = subprocess.run([sys.executable, "-m", "groundbreak.evaluate", "publish", str(package.root),
                           str(tmp_path / "pub"), "world=%s" % report, "--command", "old way"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "deprecated: use `groundbreak model publish`" in proc.stderr
    meta = json.loads((tmp_path / "pub" / "model.json").read_text())["properties"]
    assert meta["groundbreak:metrics"]["world_f1"] == pytest.approx(0.847)


# -- the default model: the recipe writes the shipped package ----------------------------------------------
def _unpublished(shipped: Path, dest: Path) -> None:
    """The shipped package as the recipe's train stage leaves it, before publishing: its model.json with
    only the training figures (training.json's finite val_metrics), train's runtime ("auto") and no
    runtime validation; its card without publish's block. Everything else stays (fields of other tools)."""
    shutil.copytree(shipped, dest)
    (dest / "evaluation.json").unlink()
    doc = json.loads((dest / "model.json").read_text())
    val = json.loads((dest / "training.json").read_text())["val_metrics"]
    props = doc["properties"]
    props["groundbreak:metrics"] = {k: v for k, v in val.items() if v is not None and not math.isnan(v)}
    props["groundbreak:runtime"] = "auto"
    props.pop("groundbreak:runtime_validation", None)
    (dest / "model.json").write_text(json.dumps(doc, indent=2) + "\n")
    card = (dest / "README.md").read_text()
    begin, end = "<!-- groundbreak model publish: begin -->", "<!-- groundbreak model publish: end -->"
    assert card.count(begin) == 1 and card.count(end) == 1, "the shipped card has one publish block"
    (dest / "README.md").write_text(card.split(begin)[0] + card.split(end)[1].lstrip("\n"))


def _recipe(env: dict, **stages: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPE)], env={**os.environ, **env, **stages, "PY": sys.executable},
                          capture_output=True, text=True, timeout=300)


def test_the_recipe_s_publish_stage_writes_the_shipped_package(tmp_path):
    """scripts/train_default_model.sh, publish stage, on the shipped weights and reports: it must write
    the shipped model.json, card and evaluation.json. Changing the recipe's runtime, note, command,
    report names or runtime checks without re-publishing the package (or the other way round) fails
    here -- without retraining: the reports are the ones shipped in evaluation.json."""
    work = tmp_path / "work"
    _unpublished(SHIPPED, work / "model")
    for key, doc in json.loads((SHIPPED / "evaluation.json").read_text()).items():
        (work / "eval" / key).mkdir(parents=True)
        (work / "eval" / key / "report.json").write_text(json.dumps(doc))
    proc = _recipe({"WORK": str(work), "OUT": str(tmp_path / "out")}, STAGES="publish")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert json.loads((out / "model.json").read_text()) == json.loads((SHIPPED / "model.json").read_text())
    assert (out / "README.md").read_text() == (SHIPPED / "README.md").read_text()
    assert json.loads((out / "evaluation.json").read_text()) == json.loads((SHIPPED / "evaluation.json").read_text())
    for name in ("weights.safetensors", "training.json"):
        assert (out / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def _last_two(value: str) -> str:
    return "/".join(Path(value).parts[-2:])


def test_the_recipe_s_train_stage_is_the_recorded_training_command(tmp_path):
    """The recipe's train options are the ones training.json recorded for the shipped weights (paths
    compared by their last two parts: caches and data folders differ between machines), and its
    evaluate stage writes every report its publish stage reads."""
    env = {"GROUNDBREAK_REAL_DATA": str(tmp_path / "data"), "DRY_RUN": "1"}
    proc = _recipe(env, STAGES="train")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    script = argv[argv.index("train") + 1:]
    recorded = shlex.split(json.loads((SHIPPED / "training.json").read_text())["command"])[2:]
    # --allow-resample became necessary when 5 m scenes needed it for a 2 m model; it changes no chip
    assert "--allow-resample" in script and "--allow-resample" not in recorded
    script.remove("--allow-resample")

    def normalised(args):
        return [_last_two(a) if "/" in a else a for a in args]

    assert normalised(script) == normalised(recorded)
    props = json.loads((SHIPPED / "model.json").read_text())["properties"]
    opts = dict(zip(script, script[1:]))
    assert (opts["--model-id"], opts["--version"], opts["--architecture"]) == (
        props["mlm:name"], props["groundbreak:version"], props["mlm:architecture"])
    assert ("--demo" in script) == props["groundbreak:demo"]

    proc = _recipe({**env, "WORK": str(tmp_path / "w")}, STAGES="evaluate publish")
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
    written = {Path(c[c.index("--out") + 1]) / "report.json" for c in lines if "evaluate" in c and "--out" in c}
    publish_cmd = next(c for c in lines if "publish" in c)
    read = {Path(a.split("=", 1)[1]) for a in publish_cmd if "=" in a and a.endswith("report.json")}
    assert read and read <= written, (read - written)
