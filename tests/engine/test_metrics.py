"""Chip-level figures: known answers, and the one convention for undefined figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from groundbreak.metrics import (
    ChipScores,
    average_precision,
    best_threshold,
    chip_scores,
    f1_at,
    fmt,
    json_safe,
    pr_curve,
    scores_at,
)


def test_chip_scores_known_answer():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)
    pred = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
    c = chip_scores(y, pred)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 2, 1, 3)
    assert c.precision == pytest.approx(0.5) and c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(4 / 7)  # = 2PR/(P+R) = tp / (tp + (fp + fn) / 2)
    assert c.f1 == pytest.approx(2 * c.precision * c.recall / (c.precision + c.recall))
    assert (c.positives, c.predicted) == (3, 4)
    assert c.as_dict()["f1"] == c.f1 and c.as_dict()["tn"] == 3


@pytest.mark.parametrize("tp, fp, fn, precision, recall, f1", [
    (0, 0, 0, None, None, None),  # nothing to find, nothing found: every ratio is 0/0
    (0, 0, 4, None, 0.0, 0.0),  # positives, no detections: precision undefined, F1 is 0 (not undefined)
    (0, 3, 0, 0.0, None, 0.0),  # no positives, only false alarms: recall undefined, F1 0
    (0, 3, 4, 0.0, 0.0, 0.0),
    (5, 0, 0, 1.0, 1.0, 1.0),
])
def test_undefined_figures_are_nan_never_a_made_up_number(tp, fp, fn, precision, recall, f1):
    c = ChipScores(tp, fp, fn, 10)
    for got, want in ((c.precision, precision), (c.recall, recall), (c.f1, f1)):
        if want is None:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want)


def test_threshold_rule_is_score_at_least_threshold():
    y = np.array([1, 0, 1])
    s = np.array([0.72, 0.71, 0.9])
    assert scores_at(y, s, 0.72) == ChipScores(2, 0, 0, 1)
    assert f1_at(y, s, 0.72) == 1.0 and f1_at(y, s, 0.95) == 0.0
    with pytest.raises(ValueError, match="shape"):
        chip_scores(y, np.ones(2, bool))


def test_average_precision_and_pr_curve_known_answers():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(y, 1 - s) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert math.isnan(average_precision(np.zeros(3), np.ones(3)))
    p, r, t = pr_curve(y, s)
    assert p.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert r.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0]) and t.tolist() == [0.9, 0.8, 0.7, 0.1]
    tied_p, _, tied_t = pr_curve(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.2]))
    assert tied_t.tolist() == [0.5, 0.2] and tied_p.tolist() == pytest.approx([0.5, 2 / 3])  # one point per score
    assert np.isnan(pr_curve(np.zeros(2), np.array([0.3, 0.1]))[1]).all()  # recall without positives


def test_best_threshold_maximises_f1_and_prefers_the_higher_of_ties():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    t, f1 = best_threshold(y, s)
    assert f1 == pytest.approx(0.8) and t == 0.7  # every t in (0.1, 0.7] gives F1 0.8: the highest wins
    assert best_threshold(np.array([1, 0]), np.array([0.95, 0.05])) == (0.9, 1.0)
    t, f1 = best_threshold(np.zeros(3), np.array([0.1, 0.5, 0.9]))
    assert t == 0.5 and math.isnan(f1)


def test_undefined_figures_are_null_in_json_and_na_in_text():
    doc = json_safe({"f1": float("nan"), "n": np.int64(3), "x": [np.float32(0.5), float("inf")], "ok": np.bool_(1)})
    assert json.loads(json.dumps(doc)) == {"f1": None, "n": 3, "x": [0.5, None], "ok": True}
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a" and fmt(0.96551) == "0.966"
    assert fmt(0.5, ".1%") == "50.0%"
