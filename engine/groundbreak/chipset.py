"""Screened, labelled chips: the one generator of the chips that training and evaluation see.

Chips reach ``train`` and ``evaluate`` exactly as they reach the network in ``groundbreak run``: the
same suitability rule (bands, dates, and a resolution within [0.5x, 2x] of the model's GSD unless
``allow_resample``), the same ground-fixed chip grid (``grid_for`` + ``make_plan`` over the scene's
footprint), the same warped views and the same screening (``pipeline.screen`` + ``pipeline.extract``; chips
under ``min_valid`` are skipped and counted by reason). Extracted chips are cached per scene
(``.npz`` under ``cache_dir("train")/chips``, i.e. ``$GROUNDBREAK_CACHE/train``), keyed by a hash of
the scene's path and content hash, its date, the grid, the bands and the screening settings.

Targets: a chip is positive on a scene's date when positive label polygons for that date cover at
least 1% of it (the rule ``groundbreak demo`` scores against); its 16 x 16 cell targets are the
covered fraction of each cell. Chips touched (≥ 1%) by an "ignore" polygon and not positive are left
out. Unlabelled chips of a labelled scene are negatives (``Unlabelled.NEGATIVE``, dense labels such
as a generated world) or left out (``Unlabelled.IGNORE``, sparse labels such as a review export).
Scenes given as ``negatives`` are all background: hard negatives such as tilled fields.

Place groups (for a validation split held out by place): a chip belongs to the labelled site a
label polygon names (on every date), or else to its 4 x 4-chip block of the grid.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import shapely

from .aoi import AOI
from .cache import cache_dir as _cache_dir
from .cache import is_safe_name
from .errors import UsageError
from .grid import ChipGrid, grid_for, to_grid_crs
from .labels import IGNORE, POSITIVE, LabelSet
from .masks import DEFAULT_MIN_VALID, DEFAULT_PREFILTER_MARGIN, DropRule
from .plan import footprint_aoi, make_plan
from .scene import Scene, discover_scenes
from .suitability import InputSpec, SceneFit, fit_scenes
from .view import SceneView

log = logging.getLogger(__name__)

#: Bump when the cached chip format or the extraction rule changes.
CACHE_FORMAT = 1
#: A chip is positive when positive polygons cover at least this share of it (as in `groundbreak demo`).
MIN_POSITIVE_COVER = 0.01
#: Chips per side of the grid blocks that form "places" for the held-out split.
PLACE_BLOCK_CHIPS = 4
#: Cells per chip side of the coarse activity targets (the network's cell head).
CELL_GRID = 16
BANDS: Tuple[str, ...] = ("red", "green", "blue", "nir")
#: As in a run (``RunOptions.prefilter_margin``): the decimated-mask prefilter's safety margin.
PREFILTER_MARGIN = DEFAULT_PREFILTER_MARGIN

#: ``progress(stage, done, total, info)``: what long steps report (a CLI progress bar, a test's list).
Progress = Callable[[str, int, int, Dict[str, object]], None]


class Unlabelled(str, Enum):
    """What chips of a labelled scene that no label touches are."""

    NEGATIVE = "negative"  # background: dense labels (a generated world, a full annotation)
    IGNORE = "ignore"  # left out: sparse labels (a review export)

    @classmethod
    def parse(cls, value: "Unlabelled | str") -> "Unlabelled":
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"unlabelled={value!r} is unknown", hint="use 'negative' or 'ignore'") from None


@dataclass(frozen=True, slots=True)
class ChipSpec:
    """The input a model takes, for planning chips (a ``ModelPackage`` says the same)."""

    bands: Tuple[str, ...] = BANDS
    chip_size: int = 256
    gsd: float = 2.0
    gsd_range: Tuple[float, float] = (1.5, 3.0)

    @classmethod
    def of(cls, model: InputSpec) -> "ChipSpec":
        return cls(tuple(model.bands), int(model.chip_size), float(model.gsd),
                   (float(model.gsd_range[0]), float(model.gsd_range[1])))


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


@dataclass(frozen=True, slots=True)
class LabelledScene:
    """One scene's screened chips with their targets; ``keep`` indexes the chips that are scored."""

    scene: Scene
    negative: bool  # a --negatives scene (all background)
    chips: SceneChips
    grid: ChipGrid
    targets: ChipTargets
    keep: np.ndarray  # indexes into chips with a target of 0 or 1

    @property
    def ignored(self) -> int:
        """Chips left out by "ignore" labels or ``Unlabelled.IGNORE``."""
        return int(len(self.targets.chip) - len(self.keep))

    def chip_ids(self) -> List[str]:
        """Grid chip ids of the kept chips."""
        ids = self.chips.chip_ids(self.grid)
        return [ids[i] for i in self.keep]


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

        def pick(seq: Sequence[str]) -> Tuple[str, ...]:
            return tuple(seq[i] for i in index)

        return ChipSet(self.x[index], self.y[index], self.cells[index], pick(self.groups), pick(self.chip_ids),
                       pick(self.scene_ids), pick(self.dates), self.negative_only[index], self.dropped, self.ignored)

    def summary(self) -> Dict[str, object]:
        return {"chips": len(self), "positives": int(self.y.sum()), "places": len(set(self.groups)),
                "scenes": len(set(self.scene_ids)), "negative_scene_chips": int(self.negative_only.sum()),
                "dropped": dict(self.dropped), "ignored": self.ignored}


# -- scenes --------------------------------------------------------------------------------------------
def load_scenes(specs: Sequence[str], *, band_order: Union[str, Sequence[str], None] = None) -> List[Scene]:
    """Scenes for training/evaluation, found exactly as ``groundbreak run`` finds them.

    Scenes without a date are returned too: :func:`check_scenes` reports them with every other problem."""
    return discover_scenes(list(specs), band_order=band_order, require_date=False) if specs else []


def check_scenes(scenes: Sequence[Scene], spec: InputSpec, *, allow_resample: bool = False) -> Tuple[SceneFit, ...]:
    """How each scene is read for ``spec``, or one error listing every problem of every scene (bands
    first) -- the rule ``groundbreak run`` applies, including the resolution rule (``allow_resample``)."""
    return fit_scenes(scenes, spec, allow_resample=allow_resample)


def scene_grid(scene: Scene, *, chip_px: int, gsd: float) -> Tuple[ChipGrid, AOI]:
    """The grid a run over this scene's footprint would use (UTM zone of its centre), and that AOI."""
    aoi = footprint_aoi(scene)
    return grid_for([aoi.geometry], chip_px=chip_px, gsd=gsd), aoi


# -- chips through the engine ------------------------------------------------------------------------
def extract_scene_chips(
    scene: Scene,
    spec: InputSpec = ChipSpec(),
    *,
    min_valid: float = DEFAULT_MIN_VALID,
    prefilter_margin: float = PREFILTER_MARGIN,
    allow_resample: bool = False,
    cache_dir: Optional[Path] = None,
) -> Tuple[SceneChips, ChipGrid]:
    """Every chip of ``scene`` that a run would infer (screened exactly as in a run), cached.

    ``cache_dir``: the chip cache folder (default ``cache_dir("train")``)."""
    (fit,) = check_scenes([scene], spec, allow_resample=allow_resample)
    grid, aoi = scene_grid(scene, chip_px=spec.chip_size, gsd=spec.gsd)
    cache = _cache_file(Path(cache_dir) if cache_dir is not None else _cache_dir("train"), scene, grid,
                        fit.band_indexes, min_valid, prefilter_margin)
    cached = _read_cache(cache, scene, grid)
    if cached is not None:
        return cached, grid
    chips = _screen_and_read(scene, aoi, grid, fit.band_indexes, spec, min_valid, prefilter_margin)
    _write_cache(cache, chips)
    log.info("%s: %d chip(s) kept, dropped %s", scene.scene_id, len(chips.cols), dict(chips.dropped) or "none")
    return chips, grid


def _cache_file(folder: Path, scene: Scene, grid: ChipGrid, band_indexes: Sequence[int], min_valid: float,
                prefilter_margin: float) -> Path:
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, scene.path, scene.quick_hash, scene.date.isoformat(),
                                     grid.epsg, grid.chip_px, grid.gsd, list(band_indexes), min_valid,
                                     prefilter_margin], sort_keys=True).encode()).hexdigest()[:20]
    # The scene id only names the file for a person browsing the cache; the hash decides the entry.
    prefix = scene.scene_id + "-" if is_safe_name(scene.scene_id) and len(scene.scene_id) <= 40 else ""
    return folder / "chips" / f"{prefix}{key}.npz"


def _read_cache(cache: Path, scene: Scene, grid: ChipGrid) -> Optional[SceneChips]:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            dropped = json.loads(str(z["dropped"]))
            return SceneChips(scene.scene_id, scene.date, str(z["dtype"]), grid.epsg, z["data"], z["cols"],
                              z["rows"], z["valid"], dropped, scene.path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("chip cache %s unreadable (%s); extracting again", cache, exc)
        return None


def _write_cache(cache: Path, chips: SceneChips) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".partial.npz")
    np.savez(tmp, data=chips.data, cols=chips.cols, rows=chips.rows, valid=chips.valid, dtype=chips.dtype,
             dropped=json.dumps(dict(chips.dropped)))
    os.replace(tmp, cache)


def _screen_and_read(scene: Scene, aoi: AOI, grid: ChipGrid, band_indexes: Sequence[int], spec: InputSpec,
                     min_valid: float, prefilter_margin: float) -> SceneChips:
    """The run's plan, screening and reads over the scene's whole footprint."""
    from .pipeline import ReadyChip, extract, screen

    plan = make_plan([aoi], [scene], grid)
    view = SceneView(scene, grid, tuple(band_indexes))
    rule = DropRule(min_valid, prefilter_margin)
    data: List[np.ndarray] = []
    cols: List[int] = []
    rows: List[int] = []
    valid: List[float] = []
    dropped: Dict[str, int] = {}
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
    px = spec.chip_size
    arr = np.stack(data) if data else np.zeros((0, len(spec.bands), px, px), dtype=scene.dtype)
    return SceneChips(scene.scene_id, scene.date, scene.dtype, grid.epsg, arr, np.asarray(cols, np.int64),
                      np.asarray(rows, np.int64), np.asarray(valid, np.float32), dropped, scene.path)


# -- targets -------------------------------------------------------------------------------------------
def chip_targets(
    chips: SceneChips, grid: ChipGrid, labels: Optional[LabelSet], *, negative: bool = False,
    unlabelled: "Unlabelled | str" = Unlabelled.NEGATIVE,
) -> ChipTargets:
    """Chip and cell targets and place groups for one scene's chips (see the module docstring)."""
    mode = Unlabelled.parse(unlabelled)
    n = len(chips.cols)
    target = np.zeros(n, np.int8)
    cells = np.zeros((n, CELL_GRID, CELL_GRID), np.float32)
    groups = [_block_group(grid, int(c), int(r)) for c, r in zip(chips.cols, chips.rows)]
    if negative or labels is None or n == 0:
        return ChipTargets(target, cells, tuple(groups))
    geoms = [(p, to_grid_crs(p.geometry, "EPSG:4326", grid)) for p in labels.on(chips.date)]
    s = grid.size_m
    boxes = shapely.box(chips.cols * s, chips.rows * s, (chips.cols + 1) * s, (chips.rows + 1) * s)
    chip_area = s * s
    pos = [g for p, g in geoms if p.value == POSITIVE]
    if pos:
        pos_union = shapely.union_all(pos)
        cover = shapely.area(shapely.intersection(pos_union, boxes)) / chip_area
        target[cover >= MIN_POSITIVE_COVER] = 1
        for i in np.flatnonzero(cover > 0):
            cells[i] = _cell_cover(pos_union, int(chips.cols[i]), int(chips.rows[i]), s)
    ign = [g for p, g in geoms if p.value == IGNORE]
    if ign:
        near = shapely.area(shapely.intersection(shapely.union_all(ign), boxes)) / chip_area >= MIN_POSITIVE_COVER
        target[near & (target == 0)] = -1
    if mode is Unlabelled.IGNORE:
        touched = np.zeros(n, bool) if not geoms else \
            shapely.area(shapely.intersection(shapely.union_all([g for _, g in geoms]), boxes)) > 1e-6 * chip_area
        target[~touched] = -1
    # A labelled site is one place on every date, even where it straddles grid blocks.
    for place, g in [(p.place, g) for p, g in geoms if p.place]:
        # (a sliver from reprojection rounding does not make a neighbouring chip part of the site)
        hit = shapely.intersects(g, boxes) & (shapely.area(shapely.intersection(g, boxes)) > 1e-6 * chip_area)
        for i in np.flatnonzero(hit):
            groups[i] = "site:" + place
    return ChipTargets(target, cells, tuple(groups))


def _cell_cover(union: shapely.Geometry, col: int, row: int, size_m: float) -> np.ndarray:
    """Covered fraction of each of a chip's CELL_GRID x CELL_GRID cells; row 0 is the northern edge."""
    step = size_m / CELL_GRID
    x0, y1 = col * size_m, (row + 1) * size_m
    cx = x0 + np.arange(CELL_GRID) * step
    cy = y1 - (np.arange(CELL_GRID) + 1) * step  # row 0 is the northern edge, as in the image
    sub = shapely.box(cx[None, :], cy[:, None], cx[None, :] + step, cy[:, None] + step)
    return shapely.area(shapely.intersection(union, sub)) / (step * step)


def _block_group(grid: ChipGrid, col: int, row: int) -> str:
    return "block:%d:%d:%d" % (grid.epsg, col // PLACE_BLOCK_CHIPS, row // PLACE_BLOCK_CHIPS)


# -- labelled chips of many scenes --------------------------------------------------------------------
def labelled_chips(
    scenes: Sequence[Scene],
    negatives: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    spec: InputSpec = ChipSpec(),
    min_valid: float = DEFAULT_MIN_VALID,
    unlabelled: "Unlabelled | str" = Unlabelled.NEGATIVE,
    allow_resample: bool = False,
    cache_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
    stage: str = "extract",
) -> Iterator[LabelledScene]:
    """Each scene's screened chips with their targets, labelled scenes first, then ``negatives``.

    Every scene is checked before any is read (one error lists every problem). Scenes whose chips
    were all dropped or left out are yielded too (with an empty ``keep``), so callers can count what
    was dropped. Shared by training and evaluation so both see exactly the same chips."""
    mode = Unlabelled.parse(unlabelled)
    check_scenes(list(scenes) + list(negatives), spec, allow_resample=allow_resample)
    jobs = [(s, False) for s in scenes] + [(s, True) for s in negatives]
    for k, (scene, is_negative) in enumerate(jobs):
        if progress:
            progress(stage, k, len(jobs), {"scene": scene.scene_id})
        chips, grid = extract_scene_chips(scene, spec, min_valid=min_valid, allow_resample=allow_resample,
                                          cache_dir=cache_dir)
        t = chip_targets(chips, grid, labels, negative=is_negative, unlabelled=mode)
        yield LabelledScene(scene, is_negative, chips, grid, t, np.flatnonzero(t.chip >= 0))
    if progress:
        progress(stage, len(jobs), len(jobs), {})


def add_counts(total: Dict[str, int], more: Mapping[str, int]) -> Dict[str, int]:
    """``total`` with ``more``'s counts added (in place; keys keep their first-seen order)."""
    for reason, count in more.items():
        total[reason] = total.get(reason, 0) + int(count)
    return total


def normalise(data: np.ndarray, dtype: str, mean: Sequence[float], std: Sequence[float],
              scaling: Mapping[str, Tuple[float, float]]) -> np.ndarray:
    """Raw chips -> the network's input, as ``ModelPackage.preprocess`` computes it."""
    if dtype not in scaling:
        raise UsageError(f"no value scaling for scene dtype {dtype!r} (known: {', '.join(sorted(scaling))})",
                         hint="convert the imagery to uint8, uint16 or float32")
    from .model import apply_affine, scaling_affine

    return apply_affine(data, *scaling_affine(scaling[dtype], mean, std))


def build_chip_set(
    scenes: Sequence[Scene],
    labels: Optional[LabelSet],
    *,
    negatives: Sequence[Scene] = (),
    mean: Sequence[float],
    std: Sequence[float],
    scaling: Mapping[str, Tuple[float, float]],
    spec: InputSpec = ChipSpec(),
    min_valid: float = DEFAULT_MIN_VALID,
    unlabelled: "Unlabelled | str" = Unlabelled.NEGATIVE,
    allow_resample: bool = False,
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
    dropped: Dict[str, int] = {}
    ignored = 0
    for item in labelled_chips(scenes, negatives, labels, spec=spec, min_valid=min_valid, unlabelled=unlabelled,
                               allow_resample=allow_resample, cache_dir=cache_dir, progress=progress):
        add_counts(dropped, item.chips.dropped)
        ignored += item.ignored
        idx = item.keep
        if not len(idx):
            continue
        xs.append(normalise(item.chips.data[idx], item.chips.dtype, mean, std, scaling).astype(np.float16))
        ys.append(item.targets.chip[idx].astype(np.float32))
        cs.append(item.targets.cells[idx])
        groups.extend(item.targets.groups[i] for i in idx)
        ids.extend(item.chip_ids())
        scene_ids.extend([item.chips.scene_id] * len(idx))
        dates.extend([item.chips.date.isoformat()] * len(idx))
        neg.append(np.full(len(idx), item.negative))
    if not xs:
        raise UsageError("no usable chips: every chip was dropped by screening or left out by the labels",
                         hint="check --min-valid, that the scenes overlap the labels, and the label dates")
    return ChipSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(cs), tuple(groups), tuple(ids),
                   tuple(scene_ids), tuple(dates), np.concatenate(neg), dropped, ignored)
