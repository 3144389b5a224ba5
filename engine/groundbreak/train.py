"""Training a construction-activity model from labelled chips, on CPU.

The chips come from :mod:`groundbreak.chipset` (the same grid, warped views and screening as a run;
the same chips ``groundbreak evaluate`` scores). Validation figures come from
:mod:`groundbreak.metrics` (the same P/R/F1/AP as ``evaluate``).

The validation split is held out **by place**: chips are grouped by labelled site (the place a
label polygon names) or else by a 4 x 4-chip block of the grid, and whole groups go to validation,
so the same ground never appears on both sides, on any date.

Training draws class-balanced batches (positives are rare) with flips, 90° rotations and a small
brightness jitter, on a warm-up + cosine learning-rate schedule; it checkpoints every epoch
(re-running the same configuration on the same data resumes), stops early when validation loss
stalls, keeps the best epoch's weights, and picks the detection threshold that maximises
validation F1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .chipset import ChipSet, Progress, scene_grid
from .errors import OutputError, UsageError
from .metrics import average_precision, best_threshold, f1_at, json_safe

if TYPE_CHECKING:
    import torch

    from .model import ModelPackage
    from .network import ChipNet

__all__ = ["TrainConfig", "TrainResult", "split_by_place", "train", "scene_grid"]

log = logging.getLogger(__name__)

#: Steps of linear learning-rate warm-up at most (fewer for short runs).
WARMUP_STEPS = 50


@dataclass(frozen=True, slots=True)
class TrainConfig:
    architecture: str = "resnet18-w8"
    epochs: int = 12
    steps_per_epoch: int = 0  # 0: one pass over the training chips
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 4
    positive_fraction: float = 0.35  # share of positives drawn per batch (positives are rare)
    cell_weight: float = 0.5
    brightness: float = 0.1  # +- relative brightness jitter
    batchnorm: str = "train"  # "train": learn BN statistics; "frozen": keep them (small fine-tunes)
    bn_batches: int = 4  # batches that re-estimate BN statistics before each validation ("train" mode)
    threads: int = 2

    def validate(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1 (got {self.epochs})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must be in [0, 1) (got {self.val_fraction})")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size must be at least 2 for BatchNorm (got {self.batch_size})",
                             hint="BatchNorm statistics of one chip are meaningless; use 8 or more")
        if self.batchnorm not in ("train", "frozen"):
            raise UsageError(f"batchnorm mode {self.batchnorm!r} is unknown", hint="use 'train' or 'frozen'")
        if not 0.0 <= self.positive_fraction < 1.0:
            raise UsageError(f"positive_fraction must be in [0, 1) (got {self.positive_fraction})")


@dataclass(frozen=True)
class TrainResult:
    package: "ModelPackage"
    history: Tuple[Dict[str, float], ...]
    best_epoch: int
    threshold: float
    val_metrics: Dict[str, float]
    data: Dict[str, object]
    seconds: float
    resumed_from_epoch: int = 0


# -- the held-out split --------------------------------------------------------------------------------
def split_by_place(groups: Sequence[str], val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train index, val index): whole place groups go to one side, chosen by a seeded hash."""
    groups = list(groups)
    if val_fraction <= 0:
        return np.arange(len(groups)), np.zeros(0, np.int64)
    unique = sorted(set(groups))
    u = {g: int(hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()[:8], 16) / 2**32 for g in unique}
    is_val = np.array([u[g] < val_fraction for g in groups], bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# -- what a run of the loop needs and keeps ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Schedule:
    """Linear warm-up, then cosine decay to 0 over the whole epoch budget."""

    lr: float
    total_steps: int

    @property
    def warmup(self) -> int:
        return min(WARMUP_STEPS, self.total_steps // 10 + 1)

    def at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(1, self.total_steps - self.warmup)))


@dataclass(frozen=True)
class _Batches:
    """The training split by class, the validation split, and the steps per epoch."""

    pos: np.ndarray
    negs: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    steps: int


@dataclass
class _Progress:
    """What a checkpoint carries between runs: the history and the best epoch so far (mutable state)."""

    history: List[Dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    best_epoch: int = -1  # 0-based; -1 before the first epoch
    best_loss: float = float("inf")
    best_state: Optional[Dict[str, Any]] = None

    @property
    def stale(self) -> int:
        """Epochs since the best one."""
        return len(self.history) - 1 - self.best_epoch if self.history else 0


# -- training ------------------------------------------------------------------------------------------
def train(
    config: TrainConfig,
    data: ChipSet,
    out_dir: "str | Path",
    *,
    init: "str | Path | None" = None,
    checkpoint_dir: "str | Path | None" = None,
    model_id: str = "groundbreak-model",
    version: str = "0.1.0",
    demo: bool = False,
    command: str = "",
    training_data: str = "",
    card_text: str = "",
    extra_metrics: Optional[Mapping[str, float]] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> TrainResult:
    """Train (or fine-tune from ``init``) on ``data`` and write a model package to ``out_dir``.

    Resumes from ``checkpoint_dir/last.pt`` when it holds a run of the same configuration and data.
    """
    import torch

    from .inference import set_threads
    from .modelpack import write_model_package

    config.validate()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(f"model directory {out_dir} already exists and is not empty",
                          hint="choose a new --out or pass --overwrite")
    set_threads(config.threads)
    config, net, mean, std = _start_network(config, data, init)
    batches = _batches(config, data)
    schedule = _Schedule(config.lr, batches.steps * config.epochs)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ckpt = (Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".checkpoints")) / "last.pt"
    fingerprint = _fingerprint(config, init, data)
    state = _resume(ckpt, fingerprint, net, opt)
    resumed_from = state.start_epoch
    _fit(net, opt, data, batches, config, schedule, state, ckpt, fingerprint, mean, std, progress)
    threshold, val_metrics = _final_validation(net, data, batches.val_idx)
    summary = data.summary()
    metrics = {**{k: v for k, v in val_metrics.items() if not math.isnan(v)}, **(extra_metrics or {})}
    card = _card_notes(command, config, summary, len(state.history), state.best_epoch, threshold,
                       len(batches.train_idx), len(batches.val_idx), init, card_text)
    package = write_model_package(out_dir, net, model_id=model_id, version=version, demo=demo, threshold=threshold,
                                  card_text=card, mean=mean, std=std, metrics=metrics or None, overwrite=overwrite,
                                  training_data=training_data or _training_text(summary))
    _write_json(out_dir / "training.json", {
        "command": command, "config": asdict(config), "init": str(init) if init else None, "data": summary,
        "history": state.history, "best_epoch": state.best_epoch + 1, "threshold": threshold,
        "val_metrics": val_metrics, "train_chips": len(batches.train_idx), "val_chips": len(batches.val_idx),
        "seconds": round(time.perf_counter() - t_start, 1),
    })
    return TrainResult(package, tuple(state.history), state.best_epoch + 1, threshold, val_metrics, summary,
                       time.perf_counter() - t_start, resumed_from)


def _fit(net: "ChipNet", opt: "torch.optim.Optimizer", data: ChipSet, batches: _Batches, config: TrainConfig,
         schedule: _Schedule, state: _Progress, ckpt: Path, fingerprint: str, mean: Sequence[float],
         std: Sequence[float], progress: Optional[Progress]) -> None:
    """Epochs from ``state.start_epoch`` until the budget or early stop, a checkpoint after each; then
    ``net`` holds the best epoch's weights, in eval mode."""
    for epoch in range(state.start_epoch, config.epochs):
        if state.stale >= config.patience:
            break
        record, monitor = _run_epoch(net, opt, data, batches, config, schedule, epoch, mean, std, progress)
        state.history.append(record)
        if monitor < state.best_loss - 1e-4:
            state.best_epoch, state.best_loss = epoch, monitor
            state.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if progress:
            progress("epoch", epoch + 1, config.epochs, dict(record))
        _save_checkpoint(ckpt, {
            "fingerprint": fingerprint, "epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "history": json.dumps(state.history), "best_epoch": state.best_epoch, "best_loss": state.best_loss,
            "best_model": state.best_state,
        })
        if state.stale >= config.patience:
            log.info("early stop: validation loss has not improved for %d epoch(s)", state.stale)
            break
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    net.eval()


def _start_network(config: TrainConfig, data: ChipSet,
                   init: "str | Path | None") -> Tuple[TrainConfig, "ChipNet", Tuple[float, ...], Tuple[float, ...]]:
    """A fresh network, or the ``init`` package's (its architecture and normalisation win)."""
    from .model import load_model_package
    from .modelpack import DEFAULT_MEAN, DEFAULT_STD
    from .network import build_network, load_weights

    if init is None:
        return config, build_network(config.architecture, data.x.shape[1], seed=config.seed), \
            tuple(DEFAULT_MEAN), tuple(DEFAULT_STD)
    base = load_model_package(init)
    config = replace(config, architecture=base.architecture)
    net = build_network(base.architecture, len(base.bands), seed=config.seed)
    load_weights(net, base.weights_path)
    return config, net, tuple(base.mean), tuple(base.std)


def _batches(config: TrainConfig, data: ChipSet) -> _Batches:
    train_idx, val_idx = split_by_place(data.groups, config.val_fraction, config.seed)
    if len(train_idx) == 0:
        raise UsageError("the held-out split left no training chips", hint="lower --val-fraction")
    pos = train_idx[data.y[train_idx] > 0.5]
    negs = train_idx[data.y[train_idx] <= 0.5]
    if len(pos) == 0:
        log.warning("no positive chips in the training split: the model can only learn 'background'")
    steps = config.steps_per_epoch or max(1, math.ceil(len(train_idx) / config.batch_size))
    return _Batches(pos, negs, train_idx, val_idx, steps)


def _fingerprint(config: TrainConfig, init: "str | Path | None", data: ChipSet) -> str:
    # The epoch budget is left out, so a run can be resumed with more epochs or cut short by
    # re-running it with fewer (the best checkpointed weights are then written as they are).
    settings = {k: v for k, v in asdict(config).items() if k not in ("epochs", "patience", "threads")}
    return hashlib.sha256(json.dumps(
        [settings, str(init), len(data), float(data.y.sum()), list(data.chip_ids[:50]), list(data.scene_ids[-50:])],
        sort_keys=True).encode()).hexdigest()[:16]


def _resume(ckpt: Path, fingerprint: str, net: "ChipNet", opt: "torch.optim.Optimizer") -> _Progress:
    """The checkpoint's state loaded into ``net`` and ``opt`` when it is of this run, else a fresh start."""
    import torch

    if not ckpt.is_file():
        return _Progress()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    if saved.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to another configuration or data; starting afresh", ckpt)
        return _Progress()
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    state = _Progress(history=[dict(h) for h in json.loads(saved["history"])], start_epoch=int(saved["epoch"]) + 1,
                      best_epoch=int(saved["best_epoch"]), best_loss=float(saved["best_loss"]),
                      best_state=saved["best_model"])
    log.info("resuming from %s after epoch %d", ckpt, state.start_epoch)
    return state


def _run_epoch(net: "ChipNet", opt: "torch.optim.Optimizer", data: ChipSet, batches: _Batches, config: TrainConfig,
               schedule: _Schedule, epoch: int, mean: Sequence[float], std: Sequence[float],
               progress: Optional[Progress]) -> Tuple[Dict[str, float], float]:
    """One epoch of steps, then validation: (the history record, the loss early stopping watches)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng([config.seed, epoch])
    net.train()
    if config.batchnorm == "frozen":
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    offset = torch.tensor(mean, dtype=torch.float32)[:, None, None] / \
        torch.tensor(std, dtype=torch.float32)[:, None, None]
    running = 0.0
    steps = batches.steps
    for step in range(steps):
        idx = _draw(rng, batches.pos, batches.negs, config.batch_size, config.positive_fraction)
        x, yc, cells = _augment(rng, data, idx, config.brightness, offset)
        for g in opt.param_groups:
            g["lr"] = schedule.at(epoch * steps + step)
        chip_logit, cell_logit = net(x)
        loss = F.binary_cross_entropy_with_logits(chip_logit, yc) + \
            config.cell_weight * F.binary_cross_entropy_with_logits(cell_logit, cells)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if progress:
            progress("train", epoch * steps + step + 1, steps * config.epochs,
                     {"epoch": epoch + 1, "epochs": config.epochs, "loss": running / (step + 1)})
    record = {"epoch": epoch + 1, "train_loss": running / steps, "lr": schedule.at((epoch + 1) * steps - 1)}
    if config.batchnorm == "train":
        _recalibrate_bn(net, data, batches.pos, batches.negs, config, epoch)
    if not len(batches.val_idx):
        return record, record["train_loss"]
    scores, vloss = _predict(net, data, batches.val_idx)
    yv = data.y[batches.val_idx]
    record.update({"val_loss": vloss, "val_pr_auc": average_precision(yv, scores),
                   "val_f1_at_0.5": f1_at(yv, scores, 0.5)})
    return record, vloss


def _final_validation(net: "ChipNet", data: ChipSet, val_idx: np.ndarray) -> Tuple[float, Dict[str, float]]:
    """(threshold, validation figures) of the final weights; 0.5 and no figures without a validation split."""
    if not len(val_idx):
        return 0.5, {}
    scores, vloss = _predict(net, data, val_idx)
    yv = data.y[val_idx]
    threshold, f1 = best_threshold(yv, scores)
    return threshold, {"val_loss": vloss, "val_pr_auc": average_precision(yv, scores), "val_f1": f1,
                       "val_chips": float(len(val_idx)), "val_positives": float((yv > 0.5).sum())}


def _recalibrate_bn(net: "ChipNet", data: ChipSet, pos: np.ndarray, negs: np.ndarray, config: TrainConfig,
                    epoch: int) -> None:
    """Re-estimate BatchNorm running statistics with the current weights before evaluating.

    Running averages (momentum 0.1) mix statistics of earlier weights and lag behind after a few or
    large steps, so eval-mode scores would not be the network that was trained. Batches are drawn as
    in training (class-balanced, not augmented): the statistics the weights were trained under.
    """
    import torch

    from .network import calibrate_batchnorm

    rng = np.random.default_rng([config.seed, epoch, 1])
    batches = [torch.from_numpy(data.x[_draw(rng, pos, negs, config.batch_size, config.positive_fraction)]
                                .astype(np.float32)) for _ in range(config.bn_batches)]
    calibrate_batchnorm(net, lambda i: batches[i], steps=len(batches))


def _draw(rng: np.random.Generator, pos: np.ndarray, negs: np.ndarray, n: int, frac: float) -> np.ndarray:
    if len(pos) == 0 or frac <= 0:
        return rng.choice(negs, n)
    if len(negs) == 0:
        return rng.choice(pos, n)
    k = int(rng.binomial(n, frac))
    return np.concatenate([rng.choice(pos, k), rng.choice(negs, n - k)])


def _augment(rng: np.random.Generator, data: ChipSet, idx: np.ndarray, brightness: float,
             offset: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Flips, 90° rotations (chip and cell targets together) and a small brightness jitter.

    ``offset``: mean / std per band, (C, 1, 1)."""
    import torch

    x = torch.from_numpy(data.x[idx].astype(np.float32))
    cells = torch.from_numpy(data.cells[idx].copy())
    for i in range(len(idx)):
        k = int(rng.integers(4))
        if k:
            x[i] = torch.rot90(x[i], k, dims=(1, 2))
            cells[i] = torch.rot90(cells[i], k, dims=(0, 1))
        if rng.random() < 0.5:
            x[i] = torch.flip(x[i], dims=(2,))
            cells[i] = torch.flip(cells[i], dims=(1,))
    if brightness > 0:
        # Scale reflectance (not the z-scores): x' = x*k + (k-1)*mean/std keeps nodata (0) at 0.
        gain = 1 + brightness * (2 * rng.random((len(idx), 1, 1, 1)) - 1)
        gain = gain * (1 + 0.3 * brightness * (2 * rng.random((len(idx), x.shape[1], 1, 1)) - 1))
        k_t = torch.from_numpy(gain.astype(np.float32))
        x = x * k_t + (k_t - 1) * offset[None]
    return x.contiguous(), torch.from_numpy(data.y[idx]), cells


def _predict(net: "ChipNet", data: ChipSet, idx: np.ndarray, batch: int = 32) -> Tuple[np.ndarray, float]:
    """(chip scores, mean chip loss) of ``net`` in eval mode on chips ``idx``."""
    import torch
    import torch.nn.functional as F

    net.eval()
    scores: List[np.ndarray] = []
    loss = 0.0
    with torch.inference_mode():
        for i in range(0, len(idx), batch):
            part = idx[i:i + batch]
            logit, _ = net(torch.from_numpy(data.x[part].astype(np.float32)))
            loss += float(F.binary_cross_entropy_with_logits(logit, torch.from_numpy(data.y[part]), reduction="sum"))
            scores.append(torch.sigmoid(logit).numpy())
    return np.concatenate(scores), loss / max(1, len(idx))


# -- outputs -------------------------------------------------------------------------------------------
def _save_checkpoint(path: Path, state: Dict[str, object]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, doc: Dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(json_safe(doc), indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _training_text(summary: Mapping[str, object]) -> str:
    return (f"{summary['chips']} chips ({summary['positives']} positive) from {summary['scenes']} scene(s), "
            f"{summary['places']} places; {summary['negative_scene_chips']} chips from all-negative scenes.")


def _card_notes(command: str, config: TrainConfig, summary: Mapping[str, object], epochs_run: int, best_epoch: int,
                threshold: float, n_train: int, n_val: int, init: "str | Path | None", extra: str) -> str:
    lines = []
    if command:
        lines += ["Trained with:", "", "```", command, "```", ""]
    lines.append(f"Configuration: {json.dumps(asdict(config))}" + (f"; fine-tuned from {init}" if init else ""))
    lines.append("")
    lines.append(f"Split held out by place: {n_train} training chips, {n_val} validation chips; "
                 f"best epoch {best_epoch + 1} of {epochs_run}; threshold {threshold:g} (best validation F1).")
    if extra:
        lines += ["", extra]
    return "\n".join(lines)
