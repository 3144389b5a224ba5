"""Chip-level detection figures: precision, recall, F1 and average precision (PR-AUC), once.

Training (validation), ``groundbreak evaluate`` and the demo's "vs truth" line all score with these
functions, so a figure means the same thing wherever it is printed.

**The convention for undefined figures.** A ratio whose denominator is zero is undefined and is
``NaN`` (``null`` in JSON, ``n/a`` in text), never a made-up 0 or 1:

- precision = tp / (tp + fp): undefined when nothing was predicted positive;
- recall = tp / (tp + fn): undefined when there are no positives;
- F1 = 2 tp / (2 tp + fp + fn) (the harmonic mean of precision and recall where both are defined, and
  the SMART program's tp / (tp + ½ fp + ½ fn)): defined whenever there is a positive or a predicted
  positive, so positives with no predictions score F1 0; undefined only when there are neither;
- average precision: undefined without positives.

Labels count as positive when ``> 0.5`` (chip targets are 0/1 floats); predictions are booleans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

NAN = float("nan")


def ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, or NaN when the denominator is 0 (the convention above)."""
    return numerator / denominator if denominator else NAN


@dataclass(frozen=True, slots=True)
class ChipScores:
    """Confusion counts and the figures derived from them (NaN where undefined)."""

    tp: int
    fp: int
    fn: int
    tn: int = 0

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> Dict[str, float]:
        """Counts and figures (NaN kept: use :func:`json_safe` before writing JSON)."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def chip_scores(y_true: Any, y_pred: Any) -> ChipScores:
    """Counts of ``y_pred`` (booleans) against ``y_true`` (positive when > 0.5)."""
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    p = np.asarray(y_pred, dtype=bool)
    if y.shape != p.shape:
        raise ValueError("y_true and y_pred differ in shape: %s vs %s" % (y.shape, p.shape))
    return ChipScores(tp=int((p & y).sum()), fp=int((p & ~y).sum()), fn=int((~p & y).sum()),
                      tn=int((~p & ~y).sum()))


def scores_at(y_true: Any, scores: Any, threshold: float) -> ChipScores:
    """Counts when a chip is predicted positive at ``score >= threshold`` (the engine's detection rule)."""
    return chip_scores(y_true, np.asarray(scores, dtype=np.float64) >= threshold)


def average_precision(y_true: Any, scores: Any) -> float:
    """Area under the precision-recall curve, step-wise (average precision); NaN without positives.

    Ties in score are broken by input order (a stable sort), as the training history has always been.
    """
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    if not y.any():
        return NAN
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


def pr_curve(y_true: Any, scores: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first.

    Recall is NaN everywhere without positives (the convention above)."""
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    s_all = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s_all, kind="mergesort")
    s = s_all[order]
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, np.int64)
    precision = tp[last] / (tp[last] + fp[last])
    positives = int(y.sum())
    recall = tp[last] / positives if positives else np.full(len(last), NAN)
    return precision, recall, s[last]


def best_threshold(y_true: Any, scores: Any, *, lo: float = 0.2, hi: float = 0.9) -> Tuple[float, float]:
    """(threshold, F1) maximising F1 over thresholds ``lo, lo + 0.01, … hi``; ties go to the higher one.

    Without positives there is nothing to maximise: (0.5, NaN)."""
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        return 0.5, NAN
    best = (0.5, -1.0)
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        f1 = scores_at(y, s, float(t)).f1
        if f1 >= best[1]:
            best = (float(t), f1)
    return best


def f1_at(y_true: Any, scores: Any, threshold: float) -> float:
    """F1 when chips with ``score >= threshold`` are predicted positive."""
    return scores_at(y_true, scores, threshold).f1


def is_defined(value: Any) -> bool:
    """False for NaN/None (an undefined figure), True for any finite number."""
    return value is not None and math.isfinite(float(value))


def json_safe(obj: Any) -> Any:
    """``obj`` with undefined figures (NaN, ±inf) as None and numpy scalars as Python numbers (JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def fmt(value: Any, spec: str = ".3f") -> str:
    """A figure for text: ``format(value, spec)``, or ``n/a`` when it is undefined."""
    return format(float(value), spec) if is_defined(value) else "n/a"
