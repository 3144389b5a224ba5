"""Training a construction-activity model from labelled scenes, on CPU.

Chips reach the network exactly as they reach it in ``groundbreak run``: the same ground-fixed chip
grid (``grid_for`` + ``make_plan`` over the scene's footprint), the same warped views and the same
screening (``pipeline.screen`` + ``pipeline.extract``; chips under ``min_valid`` are skipped and counted by
reason). Extracted chips are cached per scene (``.npz`` under ``~/.cache/groundbreak/train``), keyed
by the scene's content hash, the grid and the screening settings.

Targets: a chip is positive on a scene's date when positive label polygons for that date cover at
least 1% of it (the rule ``groundbreak demo`` scores against); its 16 x 16 cell targets are the
covered fraction of each cell. Chips touched (≥ 1%) by an "ignore" polygon and not positive are left
out. Unlabelled chips of a labelled scene are negatives (``unlabelled="negative"``, dense labels such
as a generated world) or left out (``unlabelled="ignore"``, sparse labels such as a review export).
Scenes given as ``negatives`` are all background: hard negatives such as tilled fields.

The validation split is held out **by place**: chips are grouped by labelled site (the place a
label polygon names) or else by a 4 x 4-chip block of the grid, and whole groups go to validation,
so the same ground never appears on both sides, on any date.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import shapely

from .aoi import AOI
from .errors import OutputError, UsageError
from .grid import ChipGrid, grid_for, to_grid_crs
from .labels import IGNORE, POSITIVE, LabelSet
from .plan import footprint_aoi, make_plan
from .scene import Scene, discover_scenes, select_bands
from .view import SceneView

log = logging.getLogger(__name__)

#: Bump when the cached chip format or the extraction rule changes.
CACHE_FORMAT = 1
#: A chip is positive when positive polygons cover at least this share of it (as in `groundbreak demo`).
MIN_POSITIVE_COVER = 0.01
#: Chips per side of the grid blocks that form "places" for the held-out split.
PLACE_BLOCK_CHIPS = 4
CELL_GRID = 16
BANDS = ("red", "green", "blue", "nir")

Progress = Callable[[str, int, int, Dict[str, object]], None]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "groundbreak" / "train"


# -- values ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SceneChips:
    """The usable chips of one scene, as read by the engine (raw dtype), and what screening dropped."""

    scene_id: str
    date: _dt.date
    dtype: str
    epsg: int
    data: np.ndarray  # (n, bands, px, px) in the scene dtype
    cols: np.ndarray  # (n,) int
    rows: np.ndarray  # (n,) int
    valid: np.ndarray  # (n,) clear valid fraction
    dropped: Mapping[str, int]  # screening reason -> count
    path: str = ""

    def chip_ids(self, grid: ChipGrid) -> List[str]:
        return [grid.chip_id(int(c), int(r)) for c, r in zip(self.cols, self.rows)]


@dataclass(frozen=True, slots=True)
class ChipTargets:
    """Targets of one scene's chips: chip label (1, 0, or -1 = left out), cell cover, place group."""

    chip: np.ndarray  # (n,) int8
    cells: np.ndarray  # (n, 16, 16) float32 covered fraction per cell
    groups: Tuple[str, ...]


@dataclass(frozen=True)
class ChipSet:
    """Chips ready for a network: normalised float16 tensors and their targets and provenance."""

    x: np.ndarray  # (N, C, px, px) float16, normalised
    y: np.ndarray  # (N,) float32 in {0, 1}
    cells: np.ndarray  # (N, 16, 16) float32
    groups: Tuple[str, ...]
    chip_ids: Tuple[str, ...]
    scene_ids: Tuple[str, ...]
    dates: Tuple[str, ...]
    negative_only: np.ndarray  # (N,) bool: came from a --negatives scene
    dropped: Mapping[str, int]
    ignored: int  # chips left out by "ignore" labels or unlabelled="ignore"

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: np.ndarray) -> "ChipSet":
        index = np.asarray(index)
        pick = lambda seq: tuple(seq[i] for i in index)  # noqa: E731
        return ChipSet(self.x[index], self.y[index], self.cells[index], pick(self.groups), pick(self.chip_ids),
                       pick(self.scene_ids), pick(self.dates), self.negative_only[index], self.dropped, self.ignored)

    def summary(self) -> Dict[str, object]:
        return {"chips": len(self), "positives": int(self.y.sum()), "places": len(set(self.groups)),
                "scenes": len(set(self.scene_ids)), "negative_scene_chips": int(self.negative_only.sum()),
                "dropped": dict(self.dropped), "ignored": self.ignored}


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
    package: object  # groundbreak.model.ModelPackage
    history: Tuple[Dict[str, float], ...]
    best_epoch: int
    threshold: float
    val_metrics: Dict[str, float]
    data: Dict[str, object]
    seconds: float
    resumed_from_epoch: int = 0


# -- chips through the engine ------------------------------------------------------------------------
def scene_grid(scene: Scene, *, chip_px: int, gsd: float) -> Tuple[ChipGrid, AOI]:
    """The grid a run over this scene's footprint would use (UTM zone of its centre), and that AOI."""
    aoi = footprint_aoi(scene)
    return grid_for([aoi.geometry], chip_px=chip_px, gsd=gsd), aoi


def extract_scene_chips(
    scene: Scene,
    *,
    bands: Sequence[str] = BANDS,
    chip_px: int = 256,
    gsd: float = 2.0,
    min_valid: float = 0.5,
    prefilter_margin: float = 0.15,
    cache_dir: Optional[Path] = None,
) -> Tuple[SceneChips, ChipGrid]:
    """Every chip of ``scene`` that a run would infer (screened exactly as in a run), cached."""
    from .masks import DropRule
    from .pipeline import ReadyChip, extract, screen

    grid, aoi = scene_grid(scene, chip_px=chip_px, gsd=gsd)
    band_indexes = select_bands(scene, bands)
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, scene.path, scene.quick_hash, scene.date.isoformat(),
                                     grid.epsg, chip_px, gsd, list(band_indexes), min_valid, prefilter_margin],
                                    sort_keys=True).encode()).hexdigest()[:20]
    cache = Path(cache_dir) / "chips" / f"{scene.scene_id}-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                dropped = json.loads(str(z["dropped"]))
                chips = SceneChips(scene.scene_id, scene.date, str(z["dtype"]), grid.epsg, z["data"], z["cols"],
                                   z["rows"], z["valid"], dropped, scene.path)
            return chips, grid
        except (OSError, ValueError, KeyError) as exc:
            log.warning("chip cache %s unreadable (%s); extracting again", cache, exc)
    plan = make_plan([aoi], [scene], grid)
    view = SceneView(scene, grid, band_indexes)
    data: List[np.ndarray] = []
    cols: List[int] = []
    rows: List[int] = []
    valid: List[float] = []
    dropped: Dict[str, int] = {}
    rule = DropRule(min_valid, prefilter_margin)
    try:
        for unit in plan.units:
            gone, keep = screen(view, unit.chips, scene=scene, grid=grid, rule=rule, unit_id=unit.unit_id)
            for rec in gone:
                dropped[rec.status] = dropped.get(rec.status, 0) + 1
            for ref in keep:
                item = extract(view, ref, scene=scene, grid=grid, rule=rule, unit_id=unit.unit_id)
                if isinstance(item, ReadyChip):
                    data.append(item.data)
                    cols.append(ref.col)
                    rows.append(ref.row)
                    valid.append(item.valid_fraction)
                else:
                    dropped[item.status] = dropped.get(item.status, 0) + 1
    finally:
        view.close()
    arr = np.stack(data) if data else np.zeros((0, len(bands), chip_px, chip_px), dtype=scene.dtype)
    chips = SceneChips(scene.scene_id, scene.date, scene.dtype, grid.epsg, arr, np.asarray(cols, np.int64),
                       np.asarray(rows, np.int64), np.asarray(valid, np.float32), dropped, scene.path)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".partial.npz")
        np.savez(tmp, data=chips.data, cols=chips.cols, rows=chips.rows, valid=chips.valid, dtype=chips.dtype,
                 dropped=json.dumps(dropped))
        os.replace(tmp, cache)
    log.info("%s: %d chip(s) kept, dropped %s", scene.scene_id, len(cols), dropped or "none")
    return chips, grid


def chip_targets(
    chips: SceneChips, grid: ChipGrid, labels: Optional[LabelSet], *, negative: bool = False,
    unlabelled: str = "negative",
) -> ChipTargets:
    """Chip and cell targets and place groups for one scene's chips (see the module docstring)."""
    n = len(chips.cols)
    target = np.zeros(n, np.int8)
    cells = np.zeros((n, CELL_GRID, CELL_GRID), np.float32)
    groups = [_block_group(grid, int(c), int(r)) for c, r in zip(chips.cols, chips.rows)]
    if negative or labels is None or n == 0:
        return ChipTargets(target, cells, tuple(groups))
    if unlabelled not in ("negative", "ignore"):
        raise UsageError(f"unlabelled={unlabelled!r} is unknown", hint="use 'negative' or 'ignore'")
    todays = labels.on(chips.date)
    geoms = [(p, to_grid_crs(p.geometry, "EPSG:4326", grid)) for p in todays]
    pos = [g for p, g in geoms if p.value == POSITIVE]
    ign = [g for p, g in geoms if p.value == IGNORE]
    pos_union = shapely.union_all(pos) if pos else None
    ign_union = shapely.union_all(ign) if ign else None
    any_union = shapely.union_all([g for _, g in geoms]) if geoms else None
    s = grid.size_m
    boxes = shapely.box(chips.cols * s, chips.rows * s, (chips.cols + 1) * s, (chips.rows + 1) * s)
    chip_area = s * s
    if pos_union is not None:
        cover = shapely.area(shapely.intersection(pos_union, boxes)) / chip_area
        target[cover >= MIN_POSITIVE_COVER] = 1
        step = s / CELL_GRID
        for i in np.flatnonzero(cover > 0):
            x0, y1 = chips.cols[i] * s, (chips.rows[i] + 1) * s
            cx = x0 + np.arange(CELL_GRID) * step
            cy = y1 - (np.arange(CELL_GRID) + 1) * step  # row 0 is the northern edge, as in the image
            sub = shapely.box(cx[None, :], cy[:, None], cx[None, :] + step, cy[:, None] + step)
            cells[i] = shapely.area(shapely.intersection(pos_union, sub)) / (step * step)
    if ign_union is not None:
        near = shapely.area(shapely.intersection(ign_union, boxes)) / chip_area >= MIN_POSITIVE_COVER
        target[near & (target == 0)] = -1
    if unlabelled == "ignore":
        touched = np.zeros(n, bool) if any_union is None else \
            shapely.area(shapely.intersection(any_union, boxes)) > 1e-6 * chip_area
        target[~touched] = -1
    # A labelled site is one place on every date, even where it straddles grid blocks.
    places = [(p.place, g) for p, g in geoms if p.place]
    for place, g in places:
        # (a sliver from reprojection rounding does not make a neighbouring chip part of the site)
        hit = shapely.intersects(g, boxes) & (shapely.area(shapely.intersection(g, boxes)) > 1e-6 * chip_area)
        for i in np.flatnonzero(hit):
            groups[i] = "site:" + place
    return ChipTargets(target, cells, tuple(groups))


def _block_group(grid: ChipGrid, col: int, row: int) -> str:
    return "block:%d:%d:%d" % (grid.epsg, col // PLACE_BLOCK_CHIPS, row // PLACE_BLOCK_CHIPS)


@dataclass
class LabelledTally:
    """What ``labelled_chips`` left out: chips dropped by screening (by reason) and chips the labels
    ignore (Unknown phases, or unlabelled with ``unlabelled="ignore"``)."""

    dropped: Dict[str, int] = field(default_factory=dict)
    ignored: int = 0


def labelled_chips(
    scenes: Sequence[Scene],
    negatives: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    bands: Sequence[str],
    chip_px: int,
    gsd: float,
    min_valid: float,
    unlabelled: str,
    cache_dir: Optional[Path],
    progress: Optional[Progress],
    stage: str,
    tally: LabelledTally,
):
    """Each scene's screened chips with their targets: yields (scene, is_negative, chips, grid,
    targets, kept indexes). Shared by training and evaluation so both see exactly the same chips."""
    jobs = [(s, False) for s in scenes] + [(s, True) for s in negatives]
    for k, (scene, is_negative) in enumerate(jobs):
        if progress:
            progress(stage, k, len(jobs), {"scene": scene.scene_id})
        chips, grid = extract_scene_chips(scene, bands=bands, chip_px=chip_px, gsd=gsd, min_valid=min_valid,
                                          cache_dir=cache_dir)
        for reason, count in chips.dropped.items():
            tally.dropped[reason] = tally.dropped.get(reason, 0) + count
        t = chip_targets(chips, grid, labels, negative=is_negative, unlabelled=unlabelled)
        keep = np.flatnonzero(t.chip >= 0)
        tally.ignored += int(len(t.chip) - len(keep))
        if len(keep):
            yield scene, is_negative, chips, grid, t, keep
    if progress:
        progress(stage, len(jobs), len(jobs), {})


def build_chip_set(
    scenes: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    negatives: Sequence[Scene] = (),
    mean: Sequence[float],
    std: Sequence[float],
    scaling: Mapping[str, Tuple[float, float]],
    bands: Sequence[str] = BANDS,
    chip_px: int = 256,
    gsd: float = 2.0,
    min_valid: float = 0.5,
    unlabelled: str = "negative",
    cache_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> ChipSet:
    """Extract, label and normalise the chips of labelled ``scenes`` and all-negative ``negatives``."""
    xs: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    cs: List[np.ndarray] = []
    groups: List[str] = []
    ids: List[str] = []
    scene_ids: List[str] = []
    dates: List[str] = []
    neg: List[np.ndarray] = []
    tally = LabelledTally()
    for scene, is_negative, chips, grid, t, idx in labelled_chips(
        scenes, negatives, labels, bands=bands, chip_px=chip_px, gsd=gsd, min_valid=min_valid,
        unlabelled=unlabelled, cache_dir=cache_dir, progress=progress, stage="extract", tally=tally,
    ):
        xs.append(normalise(chips.data[idx], chips.dtype, mean, std, scaling).astype(np.float16))
        ys.append(t.chip[idx].astype(np.float32))
        cs.append(t.cells[idx])
        cids = chips.chip_ids(grid)
        groups.extend(t.groups[i] for i in idx)
        ids.extend(cids[i] for i in idx)
        scene_ids.extend([chips.scene_id] * len(idx))
        dates.extend([chips.date.isoformat()] * len(idx))
        neg.append(np.full(len(idx), is_negative))
    dropped, ignored = tally.dropped, tally.ignored
    if not xs:
        raise UsageError("no usable chips: every chip was dropped by screening or left out by the labels",
                         hint="check --min-valid, that the scenes overlap the labels, and the label dates")
    return ChipSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(cs), tuple(groups), tuple(ids),
                   tuple(scene_ids), tuple(dates), np.concatenate(neg), dropped, ignored)


def normalise(data: np.ndarray, dtype: str, mean: Sequence[float], std: Sequence[float],
              scaling: Mapping[str, Tuple[float, float]]) -> np.ndarray:
    """Raw chips -> the network's input, as ``ModelPackage.preprocess`` computes it."""
    if dtype not in scaling:
        raise UsageError(f"no value scaling for scene dtype {dtype!r} (known: {', '.join(sorted(scaling))})",
                         hint="convert the imagery to uint8, uint16 or float32")
    from .model import apply_affine, scaling_affine

    return apply_affine(data, *scaling_affine(scaling[dtype], mean, std))


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


# -- metrics -------------------------------------------------------------------------------------------
def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as average precision); NaN without positives."""
    y = np.asarray(y) > 0.5
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


def best_threshold(y: np.ndarray, scores: np.ndarray, *, lo: float = 0.2, hi: float = 0.9) -> Tuple[float, float]:
    """(threshold, F1) maximising F1 on (y, scores), searched in [lo, hi]; ties go to the higher one."""
    y = np.asarray(y) > 0.5
    best = (0.5, -1.0)
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        pred = scores >= t
        tp = int((pred & y).sum())
        fp = int((pred & ~y).sum())
        fn = int((~pred & y).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 >= best[1]:
            best = (float(t), f1)
    return best


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
    import torch.nn.functional as F

    from .inference import set_threads
    from .model import load_model_package
    from .modelpack import DEFAULT_MEAN, DEFAULT_STD, write_model_package
    from .network import build_network, load_weights

    config.validate()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(f"model directory {out_dir} already exists and is not empty",
                          hint="choose a new --out or pass --overwrite")
    set_threads(config.threads)
    mean, std = DEFAULT_MEAN, DEFAULT_STD
    if init is not None:
        base = load_model_package(init)
        config = replace(config, architecture=base.architecture)
        mean, std = base.mean, base.std
        net = load_weights(build_network(base.architecture, len(base.bands), seed=config.seed), base.weights_path)
    else:
        net = build_network(config.architecture, data.x.shape[1], seed=config.seed)
    train_idx, val_idx = split_by_place(data.groups, config.val_fraction, config.seed)
    if len(train_idx) == 0:
        raise UsageError("the held-out split left no training chips", hint="lower --val-fraction")
    pos = train_idx[data.y[train_idx] > 0.5]
    negs = train_idx[data.y[train_idx] <= 0.5]
    if len(pos) == 0:
        log.warning("no positive chips in the training split: the model can only learn 'background'")
    steps = config.steps_per_epoch or max(1, math.ceil(len(train_idx) / config.batch_size))
    total_steps = steps * config.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = min(50, total_steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    # The epoch budget is left out, so a run can be resumed with more epochs or cut short by
    # re-running it with fewer (the best checkpointed weights are then written as they are).
    fingerprint = hashlib.sha256(json.dumps(
        [{k: v for k, v in asdict(config).items() if k not in ("epochs", "patience", "threads")}, str(init), len(data), float(data.y.sum()), list(data.chip_ids[:50]),
         list(data.scene_ids[-50:])], sort_keys=True).encode()).hexdigest()[:16]
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".checkpoints")
    ckpt = ckpt_dir / "last.pt"
    history: List[Dict[str, float]] = []
    start_epoch = 0
    best = {"epoch": -1, "loss": float("inf"), "state": None}
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"]) + 1
            history = [dict(h) for h in json.loads(state["history"])]
            best = {"epoch": int(state["best_epoch"]), "loss": float(state["best_loss"]), "state": state["best_model"]}
            log.info("resuming from %s after epoch %d", ckpt, start_epoch)
        else:
            log.warning("checkpoint %s belongs to another configuration or data; starting afresh", ckpt)
    resumed_from = start_epoch
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    stale = 0
    if history:
        stale = len(history) - 1 - best["epoch"]

    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        rng = np.random.default_rng([config.seed, epoch])
        net.train()
        if config.batchnorm == "frozen":
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        running = 0.0
        for step in range(steps):
            idx = _draw(rng, pos, negs, config.batch_size, config.positive_fraction)
            x, yc, cells = _augment(rng, data, idx, config.brightness, mean_t, std_t)
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps + step)
            chip_logit, cell_logit = net(x)
            loss = F.binary_cross_entropy_with_logits(chip_logit, yc) + \
                config.cell_weight * F.binary_cross_entropy_with_logits(cell_logit, cells)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            if progress:
                progress("train", epoch * steps + step + 1, total_steps,
                         {"epoch": epoch + 1, "epochs": config.epochs, "loss": running / (step + 1)})
        record = {"epoch": epoch + 1, "train_loss": running / steps, "lr": lr_at((epoch + 1) * steps - 1)}
        if config.batchnorm == "train":
            _recalibrate_bn(net, data, pos, negs, config, epoch)
        if len(val_idx):
            scores, vloss = _predict(net, data, val_idx)
            yv = data.y[val_idx]
            record.update({"val_loss": vloss, "val_pr_auc": average_precision(yv, scores),
                           "val_f1_at_0.5": _f1(yv, scores, 0.5)})
            monitor = vloss
        else:
            monitor = record["train_loss"]
        history.append(record)
        if monitor < best["loss"] - 1e-4:
            best = {"epoch": epoch, "loss": monitor, "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
            stale = 0
        else:
            stale += 1
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if progress:
            progress("epoch", epoch + 1, config.epochs, dict(record))
        _save_checkpoint(ckpt, {
            "fingerprint": fingerprint, "epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "history": json.dumps(history), "best_epoch": best["epoch"], "best_loss": best["loss"],
            "best_model": best["state"],
        })
        if stale >= config.patience:
            log.info("early stop: validation loss has not improved for %d epoch(s)", stale)
            break

    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    val_metrics: Dict[str, float] = {}
    threshold = 0.5
    if len(val_idx):
        scores, vloss = _predict(net, data, val_idx)
        yv = data.y[val_idx]
        if (yv > 0.5).any():
            threshold, f1 = best_threshold(yv, scores)
        else:
            f1 = float("nan")
        val_metrics = {"val_loss": vloss, "val_pr_auc": average_precision(yv, scores), "val_f1": f1,
                       "val_chips": float(len(val_idx)), "val_positives": float((yv > 0.5).sum())}
    summary = data.summary()
    metrics = {**{k: v for k, v in val_metrics.items() if not (isinstance(v, float) and math.isnan(v))},
               **(extra_metrics or {})}
    card = _card_notes(command, config, summary, history, best["epoch"], threshold, len(train_idx), len(val_idx),
                       init, card_text)
    package = write_model_package(
        out_dir, net, model_id=model_id, version=version, demo=demo, threshold=threshold, card_text=card,
        mean=mean, std=std, training_data=training_data or _training_text(summary), metrics=metrics or None,
        overwrite=overwrite,
    )
    _write_json(out_dir / "training.json", {
        "command": command, "config": asdict(config), "init": str(init) if init else None, "data": summary,
        "history": history, "best_epoch": best["epoch"] + 1, "threshold": threshold, "val_metrics": val_metrics,
        "train_chips": len(train_idx), "val_chips": len(val_idx), "seconds": round(time.perf_counter() - t_start, 1),
    })
    return TrainResult(package, tuple(history), best["epoch"] + 1, threshold, val_metrics, summary,
                       time.perf_counter() - t_start, resumed_from)


def _recalibrate_bn(net, data: ChipSet, pos: np.ndarray, negs: np.ndarray, config: TrainConfig, epoch: int) -> None:
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


def _augment(rng, data: ChipSet, idx: np.ndarray, brightness: float, mean_t, std_t):
    """Flips, 90° rotations (chip and cell targets together) and a small brightness jitter."""
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
        k = 1 + brightness * (2 * rng.random((len(idx), 1, 1, 1)) - 1)
        k = k * (1 + 0.3 * brightness * (2 * rng.random((len(idx), x.shape[1], 1, 1)) - 1))
        k = torch.from_numpy(k.astype(np.float32))
        x = x * k + (k - 1) * (mean_t / std_t)[None]
    return x.contiguous(), torch.from_numpy(data.y[idx]), cells


def _predict(net, data: ChipSet, idx: np.ndarray, batch: int = 32) -> Tuple[np.ndarray, float]:
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


def _f1(y: np.ndarray, scores: np.ndarray, t: float) -> float:
    y = y > 0.5
    p = scores >= t
    tp = int((p & y).sum())
    return 2 * tp / (2 * tp + int((p & ~y).sum()) + int((~p & y).sum())) if tp else 0.0


def _save_checkpoint(path: Path, state: Dict[str, object]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, doc: Dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _training_text(summary: Mapping[str, object]) -> str:
    return (f"{summary['chips']} chips ({summary['positives']} positive) from {summary['scenes']} scene(s), "
            f"{summary['places']} places; {summary['negative_scene_chips']} chips from all-negative scenes.")


def _card_notes(command, config: TrainConfig, summary, history, best_epoch: int, threshold: float,
                n_train: int, n_val: int, init, extra: str) -> str:
    lines = []
    if command:
        lines += ["Trained with:", "", "```", command, "```", ""]
    lines.append(f"Configuration: {json.dumps(asdict(config))}" + (f"; fine-tuned from {init}" if init else ""))
    lines.append("")
    lines.append(f"Split held out by place: {n_train} training chips, {n_val} validation chips; "
                 f"best epoch {best_epoch + 1} of {len(history)}; threshold {threshold:g} (best validation F1).")
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def load_scenes(specs: Sequence[str], *, band_order=None) -> List[Scene]:
    """Scenes for training/evaluation, found exactly as ``groundbreak run`` finds them."""
    return discover_scenes(list(specs), band_order=band_order) if specs else []
