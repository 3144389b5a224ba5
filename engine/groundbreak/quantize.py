"""int8 as a validated part of a model package (``groundbreak model quantize``).

1. **Calibration chips** are real labelled chips, drawn through the same grid and screening as
   ``train`` and ``evaluate`` (``groundbreak.train.build_chip_set``): up to ``calibration_chips`` of
   them, positives first (up to half), then background chips, in a seeded order.
2. **Held-out chips** are other labelled chips: given separately (e.g. an unseen world), or else the
   places that ``split_by_place`` holds out from the calibration scenes (the same ground never on
   both sides, on any date).
3. The network is exported once to OpenVINO IR (fp32) and quantised with NNCF on the calibration
   chips (the two small heads stay fp32). Both IRs go into the package (``groundbreak.artifacts``).
4. Every OpenVINO runtime is scored on the held-out chips against eager fp32 at the package's
   threshold: chip F1, and max / mean |Δscore|. A runtime **passes** when its F1 is at most
   ``max_f1_drop`` (default 0.01) below the reference's. The records go into ``model.json``
   (``groundbreak:runtime_validation``) and the card; ``auto`` then uses int8 only if it passed.

A held-out set without positive chips cannot show a loss of recall, so it is refused.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from groundbreak import artifacts
from groundbreak.errors import OutputError, UsageError
from groundbreak.model import ModelPackage, RuntimeValidation, load_model_package

log = logging.getLogger(__name__)

DEFAULT_MAX_F1_DROP = 0.01
DEFAULT_CALIBRATION_CHIPS = 300
#: The OpenVINO runtimes validated here, each with the artifact it runs.
VALIDATED = (("openvino", "openvino"), ("openvino-bf16", "openvino"), ("openvino-int8", "openvino-int8"))

Progress = Callable[[str, int, int, Dict[str, object]], None]


@dataclass(frozen=True, slots=True)
class LabelledChips:
    """Preprocessed chips with chip labels and a description of where they come from."""

    x: np.ndarray  # (N, C, px, px) normalised (float16 or float32)
    y: np.ndarray  # (N,) 0/1
    description: str
    seen_in_training: Optional[bool] = None  # None: not known
    scenes: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def positives(self) -> int:
        return int(np.sum(self.y > 0.5))


@dataclass(frozen=True, slots=True)
class RuntimeFigures:
    """One runtime on the held-out chips, against the eager fp32 reference."""

    runtime: str
    f1: float
    precision: Optional[float]  # None: no chip predicted positive
    recall: float
    max_abs_dscore: float
    mean_abs_dscore: float


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    package: ModelPackage
    reference: RuntimeFigures  # eager fp32
    figures: Tuple[RuntimeFigures, ...]
    records: Tuple[RuntimeValidation, ...]
    calibration: Mapping[str, Any]
    seconds: float

    def passed(self, runtime: str) -> bool:
        return any(r.runtime == runtime and r.passed for r in self.records)


def labelled_chips(package: ModelPackage, scenes: Sequence[Any], labels: Any, *, negatives: Sequence[Any] = (),
                   min_valid: float = 0.5, unlabelled: str = "negative", allow_resample: bool = False,
                   description: str = "", seen_in_training: Optional[bool] = None, cache_dir: Optional[Path] = None,
                   progress: Optional[Progress] = None) -> Tuple[LabelledChips, Any]:
    """Chips of ``scenes`` (labelled by ``labels``) and ``negatives`` as the package sees them, through
    the grid and screening of ``train`` and ``evaluate`` (``groundbreak.chipset``), with the
    ``ChipSet`` they came from (for a split by place)."""
    from groundbreak.chipset import build_chip_set

    chip_set = build_chip_set(
        list(scenes), labels, negatives=list(negatives), mean=package.mean, std=package.std, scaling=package.scaling,
        spec=package, min_valid=min_valid, unlabelled=unlabelled, allow_resample=allow_resample, cache_dir=cache_dir,
        progress=progress,
    )  # fmt: skip
    ids = tuple(sorted(set(chip_set.scene_ids)))
    text = description or f"scene(s) {', '.join(ids[:6])}" + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
    return LabelledChips(chip_set.x, chip_set.y, text, seen_in_training, ids), chip_set


def split_held_out(chip_set: Any, chips: LabelledChips, *, fraction: float, seed: int) -> Tuple[LabelledChips,
                                                                                                  LabelledChips]:
    """(calibration, held-out): whole places (sites or 4 x 4-chip blocks) go to one side."""
    from groundbreak.train import split_by_place

    cal_idx, val_idx = split_by_place(chip_set.groups, fraction, seed)
    if not len(val_idx) or not len(cal_idx):
        raise UsageError(f"holding out {fraction:.0%} of the places left one side empty "
                         f"({len(cal_idx)} calibration, {len(val_idx)} held-out chips)",
                         hint="pass more scenes, another --holdout-fraction, or separate --holdout-scenes")
    cal = LabelledChips(chips.x[cal_idx], chips.y[cal_idx], f"{chips.description}; places not held out",
                        chips.seen_in_training, chips.scenes)
    val = LabelledChips(chips.x[val_idx], chips.y[val_idx],
                        f"{chips.description}; {fraction:.0%} of places held out from calibration (seed {seed})",
                        chips.seen_in_training, chips.scenes)
    return cal, val


def calibration_subset(chips: LabelledChips, n: int, *, seed: int = 0) -> np.ndarray:
    """Up to ``n`` chips: positives first (at most half), then background, each in a seeded order."""
    rng = np.random.default_rng(seed)
    pos = rng.permutation(np.flatnonzero(chips.y > 0.5))
    neg = rng.permutation(np.flatnonzero(chips.y <= 0.5))
    take_pos = pos[: min(len(pos), n // 2)]
    take = np.concatenate([take_pos, neg[: n - len(take_pos)]])
    if len(take) < n:
        take = np.concatenate([take, pos[len(take_pos) : len(take_pos) + n - len(take)]])
    return np.sort(take)


def quantize_package(
    package: ModelPackage,
    calibration: LabelledChips,
    held_out: LabelledChips,
    *,
    out: "str | Path | None" = None,
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
    calibration_chips: int = DEFAULT_CALIBRATION_CHIPS,
    threads: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> QuantizeResult:
    """Calibrate int8 on ``calibration``, validate every OpenVINO runtime on ``held_out``, and write the
    IRs and the figures into the package (in place, or into a copy at ``out``)."""
    from groundbreak import torch_runtime as tr

    t0 = time.perf_counter()
    _check_inputs(calibration, held_out, max_f1_drop, calibration_chips)
    pkg = _target(package, out, overwrite)
    say = progress or (lambda *a: None)
    say("export", 0, 3, {})
    tr.set_threads(threads)
    net = tr.load_network(pkg)
    fp32 = tr.to_openvino(net, pkg)
    pick = calibration_subset(calibration, calibration_chips, seed=seed)
    cal_x = calibration.x[pick].astype(np.float32)
    say("calibrate", 1, 3, {"chips": len(pick)})
    int8 = tr.quantize_openvino(fp32, cal_x)
    cal_doc = {"data": calibration.description, "chips": int(len(pick)),
               "positive_chips": int(np.sum(calibration.y[pick] > 0.5)), "seed": seed,
               "seen_in_training": calibration.seen_in_training, "method": tr.QUANTIZATION_METHOD}  # fmt: skip
    arts = {"openvino": artifacts.write_ir(pkg, "openvino", fp32, precision="fp32"),
            "openvino-int8": artifacts.write_ir(pkg, "openvino-int8", int8, precision="int8", calibration=cal_doc)}
    # Listed without their earlier records (they described other IR): auto keeps off int8 until
    # the new figures are in.
    pkg = artifacts.record(pkg, artifacts=arts.values(), forget=[runtime for runtime, _ in VALIDATED])
    say("validate", 2, 3, {"chips": len(held_out)})
    x = held_out.x.astype(np.float32)
    ref_scores = _scores(tr.eager_engine(net), x)
    reference = _figures("eager", ref_scores, ref_scores, held_out.y, pkg.threshold)
    figures, records = [], []
    for runtime, art in VALIDATED:
        scores = _runtime_scores(pkg, runtime, x, threads)
        if scores is None:
            continue
        fig = _figures(runtime, scores, ref_scores, held_out.y, pkg.threshold)
        figures.append(fig)
        records.append(_record(fig, reference, held_out, max_f1_drop, art))
    # Each IR carries the validation of the runtimes that run it; runtime_validation holds the same
    # records (the ones `auto` and refusals read; `groundbreak model publish` may re-measure them).
    carried = [replace(arts[art], validation={r.runtime: r for r in records if dict(VALIDATED)[r.runtime] == art})
               for art in arts]
    pkg = artifacts.record(pkg, artifacts=carried, validation=records,
                           card_text=card_text(reference, figures, records, cal_doc, held_out, max_f1_drop))
    say("validate", 3, 3, {})
    return QuantizeResult(pkg, reference, tuple(figures), tuple(records), cal_doc, time.perf_counter() - t0)


def card_text(reference: RuntimeFigures, figures: Sequence[RuntimeFigures], records: Sequence[RuntimeValidation],
              calibration: Mapping[str, Any], held_out: LabelledChips, max_f1_drop: float) -> str:
    """The card's "Runtimes" section: what each runtime scored and what `auto` does with it."""
    seen = {True: "seen in training", False: "not seen in training", None: "training overlap not stated"}
    lines = [
        f"Measured by `groundbreak model quantize` on held-out labelled chips: {held_out.description} "
        f"({len(held_out)} chips, {held_out.positives} with construction; {seen[held_out.seen_in_training]}). "
        f"Reference: eager fp32, F1 {reference.f1:.3f} (precision {_fmt(reference.precision)}, recall "
        f"{reference.recall:.3f}). A runtime passes when its F1 is at most {max_f1_drop:g} below the reference's; "
        "`auto` uses an int8 runtime only when it passed.",
        "",
        "| runtime | F1 | precision | recall | max abs Δscore | mean abs Δscore | passed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    verdict = {r.runtime: r.passed for r in records}
    for f in figures:
        lines.append(f"| {f.runtime} | {f.f1:.3f} | {_fmt(f.precision)} | {f.recall:.3f} | {f.max_abs_dscore:.4f} | "
                     f"{f.mean_abs_dscore:.4f} | {'yes' if verdict.get(f.runtime) else 'no'} |")
    lines += ["", f"int8 calibration: {calibration['chips']} chips ({calibration['positive_chips']} with construction) "
              f"from {calibration['data']} ({seen[calibration.get('seen_in_training')]}); {calibration['method']}."]
    return "\n".join(lines)


# -- internals -------------------------------------------------------------------------------------------


def _check_inputs(calibration: LabelledChips, held_out: LabelledChips, max_f1_drop: float, n: int) -> None:
    if n < 1:
        raise UsageError(f"--calibration-chips must be at least 1 (got {n})")
    if not 0 <= max_f1_drop < 1:
        raise UsageError(f"--max-f1-drop must be in [0, 1) (got {max_f1_drop})")
    if not len(calibration):
        raise UsageError("no calibration chips", hint="pass --scenes (and --labels) with usable chips")
    if not held_out.positives:
        raise UsageError(
            f"the held-out chips ({held_out.description}) hold no construction: they cannot show a loss of recall",
            hint="hold out labelled scenes with construction (--holdout-labels/--holdout-scenes)",
        )


def _target(package: ModelPackage, out: "str | Path | None", overwrite: bool) -> ModelPackage:
    if out is None or Path(out).resolve() == package.root.resolve():
        return package
    dst = Path(out)
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise OutputError(f"{dst} already exists and is not empty", hint="choose another --out or pass --overwrite")
        shutil.rmtree(dst)
    shutil.copytree(package.root, dst, ignore=shutil.ignore_patterns(".*"))
    return load_model_package(dst)


def _runtime_scores(pkg: ModelPackage, runtime: str, x: np.ndarray, threads: int) -> Optional[np.ndarray]:
    from groundbreak.errors import DependencyError
    from groundbreak.inference import Predictor

    try:
        # force: an earlier record of this runtime must not stop its re-measurement.
        p = Predictor(pkg, runtime=runtime, threads=threads, batch_size=16, force=True, cache_dir=None)
    except DependencyError as exc:
        log.info("runtime %s not measured: %s", runtime, exc)
        return None
    return p.predict_normalised(x).scores


def _scores(engine: Any, x: np.ndarray, *, batch: int = 16) -> np.ndarray:
    from groundbreak.inference import sigmoid

    logits = np.concatenate([engine(x[i : i + batch])[0] for i in range(0, len(x), batch)])
    return sigmoid(logits)


def _figures(runtime: str, scores: np.ndarray, ref: np.ndarray, y: np.ndarray, threshold: float) -> RuntimeFigures:
    from groundbreak.metrics import is_defined, scores_at

    counts = scores_at(y, scores, threshold)  # the held-out set has positives: F1 and recall are defined
    delta = np.abs(scores.astype(np.float64) - ref.astype(np.float64))
    return RuntimeFigures(
        runtime=runtime, f1=float(counts.f1), recall=float(counts.recall),
        precision=float(counts.precision) if is_defined(counts.precision) else None,
        max_abs_dscore=float(delta.max()), mean_abs_dscore=float(delta.mean()),
    )  # fmt: skip


def _record(fig: RuntimeFigures, reference: RuntimeFigures, held_out: LabelledChips, max_f1_drop: float,
            artifact: str) -> RuntimeValidation:
    return RuntimeValidation(
        runtime=fig.runtime, passed=fig.f1 >= reference.f1 - max_f1_drop - 1e-12, f1=round(fig.f1, 6),
        reference_f1=round(reference.f1, 6), reference_runtime="eager", data=held_out.description,
        chips=len(held_out), max_abs_dscore=round(fig.max_abs_dscore, 6), mean_abs_dscore=round(fig.mean_abs_dscore, 6),
        max_f1_drop=max_f1_drop, seen_in_training=held_out.seen_in_training, artifact=artifact,
        note=f"precision {_fmt(fig.precision)}, recall {fig.recall:.3f}; measured by groundbreak model quantize",
    )  # fmt: skip


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_rows(result: QuantizeResult) -> List[Dict[str, Any]]:
    """One plain dict per runtime (for ``--json``)."""
    passed = {r.runtime: r.passed for r in result.records}
    rows = [{"runtime": "eager", "f1": result.reference.f1, "precision": result.reference.precision,
             "recall": result.reference.recall, "max_abs_dscore": 0.0, "mean_abs_dscore": 0.0, "passed": True}]
    for f in result.figures:
        rows.append({"runtime": f.runtime, "f1": f.f1, "precision": f.precision, "recall": f.recall,
                     "max_abs_dscore": f.max_abs_dscore, "mean_abs_dscore": f.mean_abs_dscore,
                     "passed": passed.get(f.runtime, False)})
    return rows


__all__ = [
    "DEFAULT_CALIBRATION_CHIPS",
    "DEFAULT_MAX_F1_DROP",
    "LabelledChips",
    "QuantizeResult",
    "RuntimeFigures",
    "calibration_subset",
    "card_text",
    "labelled_chips",
    "quantize_package",
    "split_held_out",
    "summary_rows",
]
