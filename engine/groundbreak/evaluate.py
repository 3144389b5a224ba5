"""Evaluating a model package against labels: chip-level scores, false alarms, a report, publishing.

Chips come from :mod:`groundbreak.chipset`, exactly as training sees them (the run's suitability
rule, grid, warped views and screening) with the training rule's targets (positive when positive
label polygons for the scene's date cover ≥ 1% of the chip; "ignore" labels leave chips out).
Scenes given as ``negatives`` hold no construction at all: every chip there is a negative, and
every detection a false alarm.

Figures (from :mod:`groundbreak.metrics`, whose convention makes undefined figures NaN / null):
precision, recall and F1 at the package's threshold, PR-AUC (average precision), a confusion
matrix, and false alarms per km² per date (false-positive chips divided by the area of the chips
scored on that date; "pooled" divides all false alarms by the summed km²-dates). ``write_report``
writes ``report.json`` and PNG plots (PR curve, score histograms per class, confusion matrix) with
matplotlib's Agg backend.

``publish`` (``groundbreak model publish``) re-writes a trained package with its evaluation figures
in ``model.json`` and the model card, and with ``groundbreak:runtime_validation`` records when
reports of the same data on other runtimes are given (how the default model is made).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, cast

import numpy as np

from .chipset import LabelledScene, Progress, Unlabelled, add_counts, labelled_chips
from .errors import MissingFileError, OutputError, UsageError
from .labels import LabelSet
from .metrics import average_precision, chip_scores, fmt, is_defined, json_safe, pr_curve
from .names import RUNTIMES
from .scene import Scene

if TYPE_CHECKING:
    from .model import ModelPackage

log = logging.getLogger(__name__)

#: A runtime passes validation when its F1 is at most this much below the reference runtime's.
RUNTIME_F1_TOLERANCE = 0.01
#: The runtime the figures of a package are measured on, and other runtimes compared with.
REFERENCE_RUNTIME = "eager"


class ChipPredictor(Protocol):
    """Anything with ``predict(chips, dtype)`` returning an object with ``scores`` (a ``Predictor``)."""

    def predict(self, chips: np.ndarray, dtype: str) -> Any: ...


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
        c = chip_scores(self.y, self.predicted)
        return {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn}

    def per_date(self, mask: Optional[np.ndarray] = None) -> List[DateFigures]:
        mask = np.ones(len(self.y), bool) if mask is None else mask
        out = []
        dates = np.asarray(self.dates)
        scenes = np.asarray(self.scene_ids)
        for d in sorted(set(dates[mask])):
            m = mask & (dates == d)
            c = chip_scores(self.y[m], self.predicted[m])
            km2 = float(m.sum()) * self.chip_km2
            out.append(DateFigures(d, len(set(scenes[m])), int(m.sum()), c.positives, c.tp, c.fp, c.fn, km2,
                                   c.fp / km2 if km2 else 0.0))
        return out

    def summary(self) -> Dict[str, object]:
        c = chip_scores(self.y, self.predicted)
        out: Dict[str, object] = {
            "chips": int(len(self.y)), "positives": c.positives, "threshold": self.threshold,
            "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
            "precision": c.precision, "recall": c.recall, "f1": c.f1,
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
    package: "ModelPackage",
    scenes: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    negatives: Sequence[Scene] = (),
    predictor: Optional[ChipPredictor] = None,
    min_valid: float = 0.5,
    threads: int = 2,
    runtime: Optional[str] = None,
    force_runtime: bool = False,
    batch_size: int = 32,
    unlabelled: "Unlabelled | str" = Unlabelled.NEGATIVE,
    allow_resample: bool = False,
    cache_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> Evaluation:
    """Score every chip of ``scenes`` (against ``labels``) and ``negatives`` (all background).

    ``predictor``: by default the predictor ``groundbreak run`` builds for ``runtime`` (None: the
    package's ``groundbreak:runtime``; ``force_runtime`` allows one its recorded validation failed).
    Scenes far from the model's resolution are refused unless ``allow_resample``.
    """
    if not scenes and not negatives:
        raise UsageError("nothing to evaluate: no scenes", hint="pass --scenes with --labels, and/or --negatives")
    if scenes and labels is None:
        raise UsageError("--scenes need --labels to be scored", hint="pass --labels, or use --negatives for "
                         "scenes that hold no construction at all")
    items = labelled_chips(scenes, negatives, labels, spec=package, min_valid=min_valid, unlabelled=unlabelled,
                           allow_resample=allow_resample, cache_dir=cache_dir, progress=progress, stage="evaluate")
    if predictor is None:
        from .pipeline.units import build_predictor

        # The run's builder (its runtime choice, refusal rules and dependency errors); it returns a
        # groundbreak.inference.Predictor, typed as the narrower protocol the infer stage needs.
        predictor = cast(ChipPredictor, build_predictor(package, runtime=runtime, threads=threads,
                                                        batch_size=batch_size, force_runtime=force_runtime))
    scored = _score(items, predictor, batch_size)
    return Evaluation(
        model_id=package.model_id, model_sha256=package.sha256, demo=package.demo, threshold=package.threshold,
        y=scored.y, scores=scored.scores, chip_ids=scored.chip_ids, scene_ids=scored.scene_ids, dates=scored.dates,
        negative_only=scored.negative_only, chip_km2=package.chip_size_m ** 2 / 1e6, dropped=scored.dropped,
        ignored=scored.ignored,
        inputs={"scenes": [s.path for s in scenes], "negatives": [s.path for s in negatives],
                "labels": list(labels.sources) if labels is not None else [], "min_valid": min_valid,
                "allow_resample": allow_resample, "runtime": getattr(predictor, "runtime", "custom")},
    )


@dataclass(frozen=True)
class _Scored:
    y: np.ndarray
    scores: np.ndarray
    chip_ids: Tuple[str, ...]
    scene_ids: Tuple[str, ...]
    dates: Tuple[str, ...]
    negative_only: np.ndarray
    dropped: Dict[str, int]
    ignored: int


def _score(items: Iterable[LabelledScene], predictor: ChipPredictor, batch_size: int) -> _Scored:
    """Every kept chip through ``predictor`` in batches of ``batch_size``, with its target and provenance."""
    ys: List[np.ndarray] = []
    ss: List[np.ndarray] = []
    ids: List[str] = []
    scene_ids: List[str] = []
    dates: List[str] = []
    neg: List[np.ndarray] = []
    dropped: Dict[str, int] = {}
    ignored = 0
    for item in items:
        add_counts(dropped, item.chips.dropped)
        ignored += item.ignored
        keep = item.keep
        if not len(keep):
            continue
        ss.append(np.concatenate([
            np.asarray(predictor.predict(item.chips.data[keep[i:i + batch_size]], item.chips.dtype).scores,
                       np.float64)
            for i in range(0, len(keep), batch_size)
        ]))
        ys.append(item.targets.chip[keep].astype(np.float32))
        ids.extend(item.chip_ids())
        scene_ids.extend([item.scene.scene_id] * len(keep))
        dates.extend([item.scene.date.isoformat()] * len(keep))
        neg.append(np.full(len(keep), item.negative))
    if not ys:
        raise UsageError("no chips to evaluate: every chip was dropped by screening or left out",
                         hint="check --min-valid and that the scenes overlap the labels")
    return _Scored(np.concatenate(ys), np.concatenate(ss), tuple(ids), tuple(scene_ids), tuple(dates),
                   np.concatenate(neg), dropped, ignored)


# -- the report ----------------------------------------------------------------------------------------
def write_report(ev: Evaluation, out_dir: "str | Path") -> Dict[str, Path]:
    """``report.json`` plus ``pr_curve.png``, ``score_histogram.png`` and ``confusion_matrix.png``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {out}: {exc}", hint="choose a writable --out") from None
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the CLI and tests run headless
    summary = ev.summary()
    paths = {"pr_curve": _plot_pr_curve(ev, summary, out / "pr_curve.png"),
             "score_histogram": _plot_histograms(ev, out / "score_histogram.png"),
             "confusion_matrix": _plot_confusion(ev, out / "confusion_matrix.png")}
    doc = {
        "model": {"model_id": ev.model_id, "sha256": ev.model_sha256, "demo": ev.demo, "threshold": ev.threshold},
        "inputs": dict(ev.inputs),
        "summary": summary,
        "per_date": [asdict(d) for d in ev.per_date()],
        "plots": {k: v.name for k, v in paths.items()},
    }
    paths["report"] = out / "report.json"
    _write_text(paths["report"], json.dumps(json_safe(doc), indent=1) + "\n")
    return paths


def _plot_pr_curve(ev: Evaluation, summary: Mapping[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    if (ev.y > 0.5).any():
        p, r, _ = pr_curve(ev.y, ev.scores)
        ax.step(np.r_[0, r], np.r_[1, p], where="post", color="tab:blue", label=f"PR-AUC {summary['pr_auc']:.3f}")
        if is_defined(summary["precision"]):
            ax.plot([float(summary["recall"])], [float(summary["precision"])], "o", color="tab:red",
                    label=f"threshold {ev.threshold:g}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no positive chips", ha="center", va="center")
    tag = f"{ev.model_id}{' (DEMO weights)' if ev.demo else ''}"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=f"PR curve: {tag}")
    return _save(fig, path)


def _plot_histograms(ev: Evaluation, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = [float(b) for b in np.linspace(0, 1, 41)]
    y = ev.y > 0.5
    if (~y).any():
        ax.hist(ev.scores[~y], bins=bins, alpha=0.6, color="tab:gray", label=f"background ({int((~y).sum())})")
    if y.any():
        ax.hist(ev.scores[y], bins=bins, alpha=0.6, color="tab:orange", label=f"construction ({int(y.sum())})")
    ax.axvline(ev.threshold, color="tab:red", linestyle="--", label="threshold")
    ax.set_yscale("log")
    ax.set(xlabel="chip score", ylabel="chips", title="Score histograms per class")
    ax.legend()
    return _save(fig, path)


def _plot_confusion(ev: Evaluation, path: Path) -> Path:
    import matplotlib.pyplot as plt

    c = ev.confusion()
    m = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < m.max() / 2 else "white")
    ax.set_xticks([0, 1], ["background", "construction"])
    ax.set_yticks([0, 1], ["background", "construction"])
    ax.set(xlabel="predicted", ylabel="labelled", title=f"Chips at threshold {ev.threshold:g}")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- evaluation reports as publish reads them ---------------------------------------------------------
_REPORT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class Report:
    """One ``report.json`` under the name it is published as (``demo_world_7``)."""

    name: str
    path: str
    doc: Mapping[str, Any]

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.doc["summary"]

    @property
    def runtime(self) -> str:
        return str(self.doc.get("inputs", {}).get("runtime"))

    @property
    def data(self) -> Tuple[Any, ...]:
        """What was scored: the same tuple means the same chips (scenes, labels, screening)."""
        inp = self.doc.get("inputs", {})
        return (inp.get("scenes"), inp.get("negatives"), inp.get("labels"), inp.get("min_valid"),
                self.summary.get("chips"), self.summary.get("positives"))


def read_report(name: str, path: "str | Path") -> Report:
    """A report written by ``write_report``, checked enough to publish it (what, where, how to fix)."""
    if not _REPORT_NAME.match(name):
        raise UsageError(f"report name {name!r} is not usable as a metric prefix",
                         hint="use letters, digits and '_', starting with a letter, e.g. demo_world_7")
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"evaluation report {p} (for {name}) not found",
                               hint="run `groundbreak evaluate --out DIR` and pass DIR/report.json")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        doc["summary"]["chips"], doc["summary"]["false_alarms_per_km2_per_date"]["pooled"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{p} is not a `groundbreak evaluate` report.json ({exc!r} missing or unreadable)",
                         hint="pass the report.json that `groundbreak evaluate --out DIR` wrote") from None
    return Report(name, str(p), doc)


def metrics_from_reports(reports: Mapping[str, "str | Path"]) -> Dict[str, float]:
    """Flat ``name_metric`` figures (for ``groundbreak:metrics``) from named ``report.json`` files."""
    out: Dict[str, float] = {}
    for name, path in reports.items():
        out.update(_report_metrics(read_report(name, path)))
    return out


def _report_metrics(report: Report) -> Dict[str, float]:
    s, name = report.summary, report.name
    out: Dict[str, float] = {}
    if s.get("positives"):
        for key in ("precision", "recall", "f1", "pr_auc"):
            if s.get(key) is not None:
                out[f"{name}_{key}"] = float(s[key])
        out[f"{name}_positive_chips"] = float(s["positives"])
    out[f"{name}_chips"] = float(s["chips"])
    out[f"{name}_false_alarms_per_km2_per_date"] = float(s["false_alarms_per_km2_per_date"]["pooled"])
    return out


@dataclass(frozen=True, slots=True)
class RuntimeCheck:
    """A runtime's F1 on the same chips as the reference runtime's report (``groundbreak:runtime_validation``)."""

    runtime: str
    f1: float
    reference_f1: float
    reference_runtime: str
    data: str  # the reference report's name: which data both were measured on
    chips: int

    @property
    def passed(self) -> bool:
        return self.reference_f1 - self.f1 <= RUNTIME_F1_TOLERANCE + 1e-12

    def record(self) -> Dict[str, object]:
        """The record ``groundbreak:runtime_validation[runtime]`` holds (the format runtimes are refused by)."""
        return {"passed": self.passed, "f1": self.f1, "reference_f1": self.reference_f1,
                "reference_runtime": self.reference_runtime, "data": self.data, "chips": self.chips}


def runtime_check(reference: Report, other: Report) -> RuntimeCheck:
    """Compare ``other`` (a report on another runtime) with ``reference`` (the same data, reference runtime)."""
    where = f"runtime check {other.path} (against {reference.name})"
    if other.runtime not in RUNTIMES:
        raise UsageError(f"{where}: the report's runtime {other.runtime!r} is not an engine runtime",
                         hint="evaluate with an explicit --runtime (%s)" % ", ".join(RUNTIMES))
    if other.data != reference.data:
        raise UsageError(f"{where} was measured on other chips than report {reference.name} ({reference.path})",
                         hint="evaluate both with the same --labels/--scenes/--negatives/--min-valid")
    f1, ref = other.summary.get("f1"), reference.summary.get("f1")
    if f1 is None or ref is None or not (is_defined(f1) and is_defined(ref)):
        raise UsageError(f"{where}: F1 is undefined (the data has no positive chips)",
                         hint="check runtimes on labelled data with construction, e.g. a demo world")
    return RuntimeCheck(other.runtime, float(f1), float(ref), reference.runtime, reference.name,
                        int(other.summary["chips"]))


# -- publishing ----------------------------------------------------------------------------------------
#: Publish's own block in the card's Notes: replaced by the next publish, never repeated.
_BLOCK_BEGIN = "<!-- groundbreak model publish: begin -->"
_BLOCK_END = "<!-- groundbreak model publish: end -->"
_PUBLISHED_FIELDS = ("groundbreak:metrics", "groundbreak:runtime", "groundbreak:runtime_validation")


def publish(
    src: "str | Path",
    out: "str | Path",
    reports: Mapping[str, "str | Path"],
    *,
    runtime_checks: Sequence[Tuple[str, "str | Path"]] = (),
    command: str = "",
    runtime: Optional[str] = None,
    note: str = "",
    overwrite: bool = False,
) -> "ModelPackage":
    """Write package ``src`` as ``out`` with the evaluation ``reports`` (name -> report.json) in its
    ``groundbreak:metrics`` and card.

    ``runtime_checks``: (report name, report.json of the same data on another runtime) pairs, written
    as ``groundbreak:runtime_validation`` records (passed = F1 at most 0.01 below the named report's).
    ``runtime``: the package's preferred runtime (``groundbreak:runtime``; default: keep src's);
    ``note``: text added to the card after the figures; ``command``: how to reproduce the package.

    Only those fields change: every other field of ``model.json`` (also ones this engine does not
    know), the weights and the files its assets name are copied as they are; in the card, the
    Metrics section and publish's own block in Notes are re-written and every other section kept.
    """
    from .model import MODEL_JSON, load_model_package

    pkg = load_model_package(src)
    src_dir, out_dir = pkg.root, Path(out)
    named = {name: read_report(name, path) for name, path in reports.items()}
    measured = [(_named(named, name), read_report(name, path)) for name, path in runtime_checks]
    checks = [runtime_check(reference, other) for reference, other in measured]
    if runtime is not None and runtime != "auto" and runtime not in RUNTIMES:
        raise UsageError(f"runtime {runtime!r} is unknown", hint="use auto or one of " + ", ".join(RUNTIMES))
    doc = json.loads((src_dir / MODEL_JSON).read_text(encoding="utf-8"))
    props = doc["properties"]
    metrics = {k: float(v) for k, v in (props.get("groundbreak:metrics") or {}).items()}
    for report in named.values():
        metrics.update(_report_metrics(report))
    props["groundbreak:metrics"] = metrics
    if runtime is not None:
        props["groundbreak:runtime"] = runtime
    if checks:
        records = dict(props.get("groundbreak:runtime_validation") or {})
        records.update({c.runtime: c.record() for c in checks})
        props["groundbreak:runtime_validation"] = records
    _prepare_out(src_dir, out_dir, overwrite)
    if out_dir.resolve() != src_dir.resolve():
        _copy_package_files(doc, src_dir, out_dir)
    block = _publish_block(pkg.threshold, list(named.values()), checks, command, note)
    _write_text(out_dir / pkg.card_path.name, _published_card(pkg, metrics, block))
    evaluation = {r.name: r.doc for r in named.values()}
    evaluation.update({f"{reference.name}@{other.runtime}": other.doc for reference, other in measured})
    _write_text(out_dir / "evaluation.json", json.dumps(json_safe(evaluation), indent=1) + "\n")
    _write_text(out_dir / MODEL_JSON, json.dumps(doc, indent=2) + "\n")  # last: a reader never sees half a package
    return load_model_package(out_dir)


def _named(reports: Mapping[str, Report], name: str) -> Report:
    if name not in reports:
        raise UsageError(f"runtime check names report {name!r}, which is not among the reports given "
                         f"({', '.join(reports) or 'none'})",
                         hint="pass the reference report as NAME=report.json and the check as --runtime-check "
                              "NAME=other.json")
    return reports[name]


def _prepare_out(src_dir: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(f"model package directory {out_dir} already exists and is not empty",
                          hint="choose a new OUT or pass --overwrite")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create model package directory {out_dir}: {exc}",
                          hint="choose a writable OUT") from None


def _copy_package_files(doc: Mapping[str, Any], src_dir: Path, out_dir: Path) -> None:
    """The weights and every other file the package's assets name (relative hrefs), and training.json."""
    names = {"training.json"}
    for asset in (doc.get("assets") or {}).values():
        href = str(asset.get("href", "")) if isinstance(asset, Mapping) else ""
        if href.startswith("./") and "/" not in href[2:] and ".." not in href:
            names.add(href[2:])
    for name in sorted(names):
        source = src_dir / name
        if source.is_file() and name not in ("model.json", "evaluation.json"):
            tmp = out_dir / (name + ".partial")
            shutil.copyfile(source, tmp)
            os.replace(tmp, out_dir / name)


def _publish_block(threshold: float, reports: Sequence[Report], checks: Sequence[RuntimeCheck], command: str,
                   note: str) -> str:
    lines = [_BLOCK_BEGIN]
    if command:
        lines += [f"Reproduce: `{command}` (this package's weights and figures come from it).", ""]
    if reports:
        runtimes = sorted({r.runtime for r in reports})
        lines += ["Evaluation (`groundbreak evaluate`, chip level, threshold %g, runtime %s):"
                  % (threshold, ", ".join(runtimes)), "",
                  "| data | chips | positive | precision | recall | F1 | PR-AUC | false alarms / km² / date |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_report_row(r) for r in reports]
    if checks:
        lines += ["", "Runtime validation (`groundbreak:runtime_validation`: F1 on the same chips as the reference "
                  "runtime; a runtime passes when its F1 is at most %g below):" % RUNTIME_F1_TOLERANCE, "",
                  "| runtime | data | chips | F1 | reference F1 | F1 drop | passed |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {c.runtime} | {c.data} | {c.chips} | {c.f1:.3f} | {c.reference_f1:.3f} ({c.reference_runtime}) "
                  f"| {c.reference_f1 - c.f1:.3f} | {'yes' if c.passed else 'no'} |" for c in checks]
    if note:
        lines += ["", note.strip()]
    lines.append(_BLOCK_END)
    return "\n".join(lines)


def _report_row(r: Report) -> str:
    s = r.summary
    has_pos = bool(s.get("positives"))

    def figure(key: str) -> str:
        return fmt(s.get(key)) if has_pos else "n/a"

    fa = s["false_alarms_per_km2_per_date"]
    return (f"| {r.name} | {s['chips']} | {s['positives']} | {figure('precision')} | {figure('recall')} | "
            f"{figure('f1')} | {figure('pr_auc')} | {fa['pooled']:.4f} "
            f"({s.get('fp', 0)} false alarm(s) over {fa['km2_dates']:.1f} km²-dates) |")


def _published_card(pkg: "ModelPackage", metrics: Mapping[str, float], block: str) -> str:
    """``pkg``'s card with a fresh Metrics section and ``block`` at the top of Notes; all else kept."""
    card = pkg.card_path.read_text(encoding="utf-8")
    head, sections = _split_card(card)
    sections["Metrics"] = _split_card(_rendered_card(pkg, metrics))[1]["Metrics"]
    notes = sections.get("Notes", "")
    if _BLOCK_BEGIN in notes and _BLOCK_END in notes:
        before, rest = notes.split(_BLOCK_BEGIN, 1)
        notes = before + rest.split(_BLOCK_END, 1)[1]
    notes = notes.strip()
    if notes == "None.":  # render_card's text for empty notes
        notes = ""
    sections["Notes"] = "\n" + block + ("\n\n" + notes if notes else "") + "\n\n"
    return (head + "".join(f"## {title}{body}" for title, body in sections.items())).rstrip("\n") + "\n"


def _split_card(card: str) -> Tuple[str, Dict[str, str]]:
    """(text before the first ``## `` heading, {heading: text after its line, up to the next heading})."""
    parts = re.split(r"(?m)^## ", card)
    head, sections = parts[0], {}
    for part in parts[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = "\n" + body
    return head, sections


def _rendered_card(pkg: "ModelPackage", metrics: Mapping[str, float]) -> str:
    """The card ``write_model_package`` would write with ``metrics`` (only its Metrics section is used)."""
    from .modelpack import render_card

    return render_card(model_id=pkg.model_id, version=pkg.version, demo=pkg.demo, architecture=pkg.architecture,
                       params=int(pkg.metadata.get("properties", {}).get("mlm:total_parameters", 0)),
                       bands=pkg.bands, gsd=pkg.gsd, gsd_range=pkg.gsd_range, chip_size=pkg.chip_size,
                       threshold=pkg.threshold, training_data="", metrics=metrics, intended_use="", limits="",
                       notes="", sha=pkg.sha256)


def _legacy_main(argv: Sequence[str]) -> int:
    """``python -m groundbreak.evaluate publish …``: the old entry point, kept as a deprecated alias."""
    import sys

    from .cli import main

    print("python -m groundbreak.evaluate publish is deprecated: use `groundbreak model publish` "
          "(same arguments; this alias adds --overwrite, as the old command always replaced OUT)", file=sys.stderr)
    if not argv or argv[0] != "publish":
        print("usage: groundbreak model publish SRC OUT NAME=report.json ... [--runtime-check NAME=report.json] "
              "[--runtime NAME] [--command TEXT] [--note TEXT] [--overwrite]", file=sys.stderr)
        return 2
    try:
        main(["model", "publish", *argv[1:], "--overwrite"])
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_legacy_main(sys.argv[1:]))
