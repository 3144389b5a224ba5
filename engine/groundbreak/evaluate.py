"""Evaluating a model package against labels: chip-level scores, false alarms and a report.

Chips come through the engine exactly as in a run (``train.extract_scene_chips``: same grid,
warped views and screening) and get the training rule's targets (positive when positive label
polygons for the scene's date cover ≥ 1% of the chip; "ignore" labels leave chips out). Scenes
given as ``negatives`` hold no construction at all: every chip there is a negative, and every
detection a false alarm.

Figures: precision, recall and F1 at the package's threshold, PR-AUC (average precision), a
confusion matrix, and false alarms per km² per date (false-positive chips divided by the area of
the chips scored on that date; "pooled" divides all false alarms by the summed km²-dates).
``write_report`` writes ``report.json`` and PNG plots (PR curve, score histograms per class,
confusion matrix) with matplotlib's Agg backend.

``python -m groundbreak.evaluate publish SRC OUT name=report.json ...`` re-writes a trained package
with its evaluation figures in ``model.json`` and the model card (how the default model is made).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import OutputError, UsageError
from .labels import LabelSet
from .scene import Scene
from .train import LabelledTally, Progress, average_precision, default_cache_dir, labelled_chips

log = logging.getLogger(__name__)

#: Anything with ``predict(chips, dtype) -> object with .scores`` (a ``Predictor``, or a fake in tests).
ScoreFn = Callable[[np.ndarray, str], np.ndarray]


@dataclass(frozen=True, slots=True)
class DateFigures:
    date: str
    scenes: int
    chips: int
    positives: int
    true_positives: int
    false_positives: int
    false_negatives: int
    km2: float
    false_alarms_per_km2: float


@dataclass(frozen=True)
class Evaluation:
    model_id: str
    model_sha256: str
    demo: bool
    threshold: float
    y: np.ndarray  # (N,) 0/1
    scores: np.ndarray  # (N,)
    chip_ids: Tuple[str, ...]
    scene_ids: Tuple[str, ...]
    dates: Tuple[str, ...]
    negative_only: np.ndarray  # (N,) bool
    chip_km2: float
    dropped: Mapping[str, int]
    ignored: int
    inputs: Mapping[str, object] = field(default_factory=dict)

    @property
    def predicted(self) -> np.ndarray:
        return self.scores >= self.threshold

    def confusion(self) -> Dict[str, int]:
        y = self.y > 0.5
        p = self.predicted
        return {"tp": int((p & y).sum()), "fp": int((p & ~y).sum()), "fn": int((~p & y).sum()),
                "tn": int((~p & ~y).sum())}

    def per_date(self, mask: Optional[np.ndarray] = None) -> List[DateFigures]:
        mask = np.ones(len(self.y), bool) if mask is None else mask
        out = []
        y = self.y > 0.5
        p = self.predicted
        dates = np.asarray(self.dates)
        scenes = np.asarray(self.scene_ids)
        for d in sorted(set(dates[mask])):
            m = mask & (dates == d)
            km2 = float(m.sum()) * self.chip_km2
            fp = int((p & ~y & m).sum())
            out.append(DateFigures(d, len(set(scenes[m])), int(m.sum()), int((y & m).sum()), int((p & y & m).sum()),
                                   fp, int((~p & y & m).sum()), km2, fp / km2 if km2 else 0.0))
        return out

    def summary(self) -> Dict[str, object]:
        c = self.confusion()
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        precision = tp / (tp + fp) if tp + fp else (1.0 if not (self.y > 0.5).any() else 0.0)
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else (0.0 if tp + fp + fn else float("nan"))
        out: Dict[str, object] = {
            "chips": int(len(self.y)), "positives": int((self.y > 0.5).sum()), "threshold": self.threshold,
            **c, "precision": precision, "recall": recall, "f1": f1,
            "pr_auc": average_precision(self.y, self.scores),
            "dropped": dict(self.dropped), "ignored": self.ignored,
        }
        dates = self.per_date()
        km2 = sum(d.km2 for d in dates)
        out["false_alarms_per_km2_per_date"] = {
            "pooled": (sum(d.false_positives for d in dates) / km2) if km2 else 0.0,
            "max": max((d.false_alarms_per_km2 for d in dates), default=0.0),
            "km2_dates": round(km2, 4),
        }
        if self.negative_only.any():
            neg = self.per_date(self.negative_only)
            nkm2 = sum(d.km2 for d in neg)
            out["negative_scenes"] = {
                "chips": int(self.negative_only.sum()),
                "false_alarms": sum(d.false_positives for d in neg),
                "false_alarms_per_km2_per_date": (sum(d.false_positives for d in neg) / nkm2) if nkm2 else 0.0,
                "max_false_alarms_per_km2_on_a_date": max((d.false_alarms_per_km2 for d in neg), default=0.0),
                "km2_dates": round(nkm2, 4),
                "dates": len(neg),
            }
        return out


def evaluate(
    package,
    scenes: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    negatives: Sequence[Scene] = (),
    predictor=None,
    min_valid: float = 0.5,
    threads: int = 2,
    runtime: str = "auto",
    batch_size: int = 32,
    unlabelled: str = "negative",
    cache_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> Evaluation:
    """Score every chip of ``scenes`` (against ``labels``) and ``negatives`` (all background).

    ``predictor``: anything with ``predict(chips, dtype)`` returning an object with ``scores``;
    by default a ``groundbreak.inference.Predictor`` on ``runtime`` (as ``groundbreak run`` uses).
    """
    if not scenes and not negatives:
        raise UsageError("nothing to evaluate: no scenes", hint="pass --scenes with --labels, and/or --negatives")
    if scenes and labels is None:
        raise UsageError("--scenes need --labels to be scored", hint="pass --labels, or use --negatives for "
                         "scenes that hold no construction at all")
    if predictor is None:
        from .inference import Predictor

        predictor = Predictor(package, threads=threads, runtime=runtime)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    ys: List[np.ndarray] = []
    ss: List[np.ndarray] = []
    ids: List[str] = []
    scene_ids: List[str] = []
    dates: List[str] = []
    neg: List[np.ndarray] = []
    chip_km2 = package.chip_size_m ** 2 / 1e6
    tally = LabelledTally()
    for scene, is_negative, chips, grid, t, keep in labelled_chips(
        scenes, negatives, labels, bands=package.bands, chip_px=package.chip_size, gsd=package.gsd,
        min_valid=min_valid, unlabelled=unlabelled, cache_dir=cache_dir, progress=progress, stage="evaluate",
        tally=tally,
    ):
        scores = np.concatenate([
            np.asarray(predictor.predict(chips.data[keep[i:i + batch_size]], chips.dtype).scores, np.float64)
            for i in range(0, len(keep), batch_size)
        ])
        cids = chips.chip_ids(grid)
        ys.append(t.chip[keep].astype(np.float32))
        ss.append(scores)
        ids.extend(cids[i] for i in keep)
        scene_ids.extend([scene.scene_id] * len(keep))
        dates.extend([scene.date.isoformat()] * len(keep))
        neg.append(np.full(len(keep), is_negative))
    dropped, ignored = tally.dropped, tally.ignored
    if not ys:
        raise UsageError("no chips to evaluate: every chip was dropped by screening or left out",
                         hint="check --min-valid and that the scenes overlap the labels")
    return Evaluation(
        model_id=package.model_id, model_sha256=package.sha256, demo=package.demo, threshold=package.threshold,
        y=np.concatenate(ys), scores=np.concatenate(ss), chip_ids=tuple(ids), scene_ids=tuple(scene_ids),
        dates=tuple(dates), negative_only=np.concatenate(neg), chip_km2=chip_km2, dropped=dropped, ignored=ignored,
        inputs={"scenes": [s.path for s in scenes], "negatives": [s.path for s in negatives],
                "labels": list(labels.sources) if labels is not None else [], "min_valid": min_valid,
                "runtime": getattr(predictor, "runtime", "custom")},
    )


def pr_curve(y: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first."""
    y = np.asarray(y) > 0.5
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / max(1, int(y.sum()))
    return precision, recall, s[last]


def write_report(ev: Evaluation, out_dir: "str | Path") -> Dict[str, Path]:
    """``report.json`` plus ``pr_curve.png``, ``score_histogram.png`` and ``confusion_matrix.png``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {out}: {exc}", hint="choose a writable --out") from None
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the CLI and tests run headless
    import matplotlib.pyplot as plt

    summary = ev.summary()
    paths: Dict[str, Path] = {}
    tag = f"{ev.model_id}{' (DEMO weights)' if ev.demo else ''}"

    fig, ax = plt.subplots(figsize=(5, 4.5))
    if (ev.y > 0.5).any():
        p, r, _ = pr_curve(ev.y, ev.scores)
        ax.step(np.r_[0, r], np.r_[1, p], where="post", color="tab:blue",
                label=f"PR-AUC {summary['pr_auc']:.3f}")
        ax.plot([summary["recall"]], [summary["precision"]], "o", color="tab:red",
                label=f"threshold {ev.threshold:g}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no positive chips", ha="center", va="center")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=f"PR curve: {tag}")
    fig.tight_layout()
    paths["pr_curve"] = out / "pr_curve.png"
    fig.savefig(paths["pr_curve"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    y = ev.y > 0.5
    if (~y).any():
        ax.hist(ev.scores[~y], bins=bins, alpha=0.6, color="tab:gray", label=f"background ({int((~y).sum())})")
    if y.any():
        ax.hist(ev.scores[y], bins=bins, alpha=0.6, color="tab:orange", label=f"construction ({int(y.sum())})")
    ax.axvline(ev.threshold, color="tab:red", linestyle="--", label="threshold")
    ax.set_yscale("log")
    ax.set(xlabel="chip score", ylabel="chips", title="Score histograms per class")
    ax.legend()
    fig.tight_layout()
    paths["score_histogram"] = out / "score_histogram.png"
    fig.savefig(paths["score_histogram"], dpi=110)
    plt.close(fig)

    c = ev.confusion()
    m = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < m.max() / 2 else "white")
    ax.set_xticks([0, 1], ["background", "construction"])
    ax.set_yticks([0, 1], ["background", "construction"])
    ax.set(xlabel="predicted", ylabel="labelled", title=f"Chips at threshold {ev.threshold:g}")
    fig.tight_layout()
    paths["confusion_matrix"] = out / "confusion_matrix.png"
    fig.savefig(paths["confusion_matrix"], dpi=110)
    plt.close(fig)

    doc = {
        "model": {"model_id": ev.model_id, "sha256": ev.model_sha256, "demo": ev.demo, "threshold": ev.threshold},
        "inputs": dict(ev.inputs),
        "summary": summary,
        "per_date": [asdict(d) for d in ev.per_date()],
        "plots": {k: v.name for k, v in paths.items()},
    }
    paths["report"] = out / "report.json"
    tmp = out / "report.json.partial"
    tmp.write_text(json.dumps(_finite(doc), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, paths["report"])
    return paths


def _finite(obj):
    """JSON has no NaN: undefined figures (e.g. recall without positives) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# -- publishing a package with its evaluation ------------------------------------------------------
def metrics_from_reports(reports: Mapping[str, "str | Path"]) -> Dict[str, float]:
    """Flat ``name_metric`` figures (for ``groundbreak:metrics``) from named ``report.json`` files."""
    out: Dict[str, float] = {}
    for name, path in reports.items():
        s = json.loads(Path(path).read_text(encoding="utf-8"))["summary"]
        if s.get("positives"):
            for key in ("precision", "recall", "f1", "pr_auc"):
                if s.get(key) is not None:
                    out[f"{name}_{key}"] = float(s[key])
            out[f"{name}_positive_chips"] = float(s["positives"])
        out[f"{name}_chips"] = float(s["chips"])
        out[f"{name}_false_alarms_per_km2_per_date"] = float(s["false_alarms_per_km2_per_date"]["pooled"])
    return out


def publish(src: "str | Path", out: "str | Path", reports: Mapping[str, "str | Path"], *, command: str = "",
            runtime: Optional[str] = None, note: str = "", overwrite: bool = True) -> object:
    """Re-write package ``src`` as ``out`` with the evaluation ``reports`` in its metrics and card.

    ``runtime``: the package's preferred runtime (``groundbreak:runtime``), e.g. a float runtime when
    int8 ones lose accuracy; ``note``: text added to the card before the training notes.
    """
    from .model import load_model_package
    from .modelpack import write_model_package
    from .network import build_network, load_weights

    pkg = load_model_package(src)
    net = load_weights(build_network(pkg.architecture, len(pkg.bands), seed=None), pkg.weights_path).eval()
    card = pkg.card_path.read_text(encoding="utf-8")
    sections = _sections(card)
    metrics = {k: float(v) for k, v in (pkg.metadata.get("properties", {}).get("groundbreak:metrics") or {}).items()}
    metrics.update(metrics_from_reports(reports))
    lines = []
    if command:
        lines += [f"Reproduce: `{command}` (this package's weights and figures come from it).", ""]
    runtimes = sorted({str(json.loads(Path(p).read_text(encoding="utf-8")).get("inputs", {}).get("runtime"))
                       for p in reports.values()})
    lines += ["Evaluation (`groundbreak evaluate`, chip level, threshold %g, runtime %s):"
              % (pkg.threshold, ", ".join(runtimes)), "",
              "| data | chips | positive | precision | recall | F1 | PR-AUC | false alarms / km² / date |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, path in reports.items():
        s = json.loads(Path(path).read_text(encoding="utf-8"))["summary"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        has_pos = bool(s.get("positives"))
        lines.append(f"| {name} | {s['chips']} | {s['positives']} | {fmt(s['precision']) if has_pos else 'n/a'} | "
                     f"{fmt(s['recall']) if has_pos else 'n/a'} | {fmt(s['f1']) if has_pos else 'n/a'} | "
                     f"{fmt(s['pr_auc']) if has_pos else 'n/a'} | "
                     f"{s['false_alarms_per_km2_per_date']['pooled']:.4f} "
                     f"({s.get('fp', 0)} false alarm(s) over {s['false_alarms_per_km2_per_date']['km2_dates']:.1f} km²-dates) |")
    if note:
        lines += ["", note]
    notes = "\n".join(lines) + "\n\n" + sections.get("Notes", "").strip()
    props = pkg.metadata.get("properties", {}) if isinstance(pkg.metadata, Mapping) else {}
    written = write_model_package(
        out, net, model_id=pkg.model_id, version=pkg.version, demo=pkg.demo, threshold=pkg.threshold,
        card_text=notes, mean=pkg.mean, std=pkg.std, bands=pkg.bands, chip_size=pkg.chip_size, gsd=pkg.gsd,
        gsd_range=pkg.gsd_range, dtype_scaling=pkg.scaling,
        training_data=sections.get("Training data", "").strip(), metrics=metrics,
        runtime=runtime or (props.get("groundbreak:runtime", "auto") if isinstance(props, Mapping) else "auto"),
        overwrite=overwrite,
    )
    evaluation = {name: json.loads(Path(p).read_text(encoding="utf-8")) for name, p in reports.items()}
    (Path(out) / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n", encoding="utf-8")
    training = Path(src) / "training.json"
    if training.is_file():
        (Path(out) / "training.json").write_text(training.read_text(encoding="utf-8"), encoding="utf-8")
    return written


def _sections(card: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    current = None
    for line in card.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def _main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[0] != "publish":
        print("usage: python -m groundbreak.evaluate publish SRC_PACKAGE OUT_DIR NAME=report.json ... "
              "[--command TEXT] [--runtime NAME] [--note TEXT]")
        return 2
    args = list(argv[1:])
    opts = {"--command": "", "--runtime": None, "--note": ""}
    for flag in opts:
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1]
            del args[i:i + 2]
    src, out, *named = args
    reports = dict(item.split("=", 1) for item in named)
    pkg = publish(src, out, reports, command=opts["--command"], runtime=opts["--runtime"], note=opts["--note"])
    print(f"published {pkg.root} ({pkg.model_id} {pkg.version}, sha256 {pkg.sha256[:12]})")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
