"""Evaluation: known answers with fake predictors, false alarms per km² per date, report files, publish."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from groundbreak.evaluate import Evaluation, evaluate, metrics_from_reports, pr_curve, publish, write_report
from groundbreak.labels import read_labels
from groundbreak.train import load_scenes

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
    assert 0.0 <= doc["summary"]["pr_auc"] <= 1.0
    neg_only = evaluate(package, [], None, negatives=scenes[:1], predictor=ConstantPredictor(0.1), cache_dir=cache)
    doc = json.loads(write_report(neg_only, tmp_path / "neg")["report"].read_text())
    assert doc["summary"]["recall"] is None and doc["summary"]["pr_auc"] is None  # NaN is not JSON


def test_real_predictor_runs_on_the_world(world, package, cache):
    scenes = load_scenes([str(world.scene_paths[-1])])
    ev = evaluate(package, scenes, read_labels(world.labels_gpkg), runtime="eager", cache_dir=cache)
    assert ev.inputs["runtime"] == "eager"
    assert ((0 <= ev.scores) & (ev.scores <= 1)).all() and ev.scores.std() > 0


def test_publish_puts_evaluation_figures_in_model_json_and_card(package, tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"summary": {
        "chips": 100, "positives": 10, "precision": 0.9, "recall": 0.8, "f1": 0.847, "pr_auc": 0.88, "fp": 1,
        "false_alarms_per_km2_per_date": {"pooled": 0.04, "max": 0.1, "km2_dates": 26.2}}}))
    negatives = tmp_path / "n.json"
    negatives.write_text(json.dumps({"summary": {
        "chips": 50, "positives": 0, "precision": 1.0, "recall": None, "f1": None, "pr_auc": None, "fp": 0,
        "false_alarms_per_km2_per_date": {"pooled": 0.0, "max": 0.0, "km2_dates": 13.1}}}))
    out = publish(package.root, tmp_path / "pub", {"world": report, "naip": negatives}, command="make it")
    meta = json.loads((tmp_path / "pub" / "model.json").read_text())["properties"]
    assert meta["groundbreak:metrics"]["world_f1"] == pytest.approx(0.847)
    assert meta["groundbreak:metrics"]["naip_false_alarms_per_km2_per_date"] == 0.0
    assert "naip_f1" not in meta["groundbreak:metrics"]
    assert meta["groundbreak:demo"] is True and out.sha256 == package.sha256
    card = out.card_path.read_text()
    assert "make it" in card and "| world | 100 | 10 | 0.900 |" in card and "DEMO" in card
    assert metrics_from_reports({"world": report})["world_recall"] == pytest.approx(0.8)
