"""The stage functions of a run: screen → extract → infer → feature.

Plain functions of values, so every executor runs the same code: the in-process runner
(``local.py``), a fleet worker (``units.run_unit``) and training/evaluation chip extraction.
Screening and extraction decide drops through ``masks.DropRule`` only; inference scales each chip
by its own scene's dtype (a batch may span scenes of different dtypes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from ..errors import ReadError
from ..grid import ChipGrid
from ..masks import DropRule, Screening, class_fractions, describe_fractions
from ..model import ModelPackage
from ..names import ChipStatus
from ..plan import ChipRef
from ..scene import Scene
from ..store import ChipRecord, DetectionRecord
from ..view import SceneView

log = logging.getLogger(__name__)

#: A cell of the coarse activity map counts as active at this probability.
CELL_THRESHOLD = 0.5


class Prediction(Protocol):
    @property
    def scores(self) -> np.ndarray: ...  # (N,) probability of the positive class
    @property
    def cells(self) -> np.ndarray: ...  # (N, g, g) probability per activity cell


class Predictor(Protocol):
    """What the infer stage needs of a loaded model (``groundbreak.inference.Predictor`` is one)."""

    @property
    def runtime(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def streams(self) -> int: ...  # concurrent predict calls it accepts
    def predict_normalised(self, x: np.ndarray) -> Prediction: ...


@dataclass(frozen=True, slots=True)
class ReadyChip:
    """A chip that passed screening: its pixels in the model's band order and the scene dtype."""

    unit_id: str
    scene: Scene
    ref: ChipRef
    data: np.ndarray
    valid_fraction: float
    #: The network input (``prepare``), when the reader stage already computed it.
    x: Optional[np.ndarray] = None


Screened = Union[ChipRecord, ReadyChip]


def chip_wkb(grid: ChipGrid, ref: ChipRef) -> bytes:
    return shapely.to_wkb(grid.polygon(ref.col, ref.row))


def screen(
    view: SceneView, chips: Sequence[ChipRef], *, scene: Scene, grid: ChipGrid, rule: DropRule, unit_id: str = "",
) -> Tuple[List[ChipRecord], List[ChipRef]]:
    """Cheap screening from decimated masks, before any pixel is read: (dropped records, chips to read)."""
    if not chips:
        return [], []
    try:
        fractions = view.prefilter([(c.col, c.row) for c in chips])
    except ReadError as exc:
        # One damaged mask tile must not fail the unit: each chip is then decided on its own full
        # read, which records the chips that really cannot be read as failed.
        log.warning("%s: screening without the decimated masks (%s)", unit_id or scene.scene_id, exc.message)
        return [], list(chips)
    dropped: List[ChipRecord] = []
    keep: List[ChipRef] = []
    for ref, frac in zip(chips, fractions):
        status = rule.decide(frac, Screening.PREFILTER)
        if status is None:
            keep.append(ref)
        else:
            dropped.append(drop_record(ref, scene, grid, frac, status, Screening.PREFILTER))
    return dropped, keep


def extract(view: SceneView, ref: ChipRef, *, scene: Scene, grid: ChipGrid, rule: DropRule,
            unit_id: str = "") -> Screened:
    """Read one chip at full resolution and decide it exactly: a drop or failure record, or a ready chip."""
    try:
        pixels = view.read_chip(ref.col, ref.row)
    except ReadError as exc:
        return ChipRecord(
            chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
            status=ChipStatus.FAILED.value, valid_fraction=0.0, screened_by=Screening.EXACT.value,
            geometry_wkb=chip_wkb(grid, ref), detail=str(exc),
        )
    frac = class_fractions(pixels.classes)
    status = rule.decide(frac, Screening.EXACT)
    if status is not None:
        return drop_record(ref, scene, grid, frac, status, Screening.EXACT)
    return ReadyChip(unit_id, scene, ref, pixels.data, float(frac[0]))


def drop_record(ref: ChipRef, scene: Scene, grid: ChipGrid, frac: np.ndarray, status: ChipStatus,
                by: Screening) -> ChipRecord:
    return ChipRecord(
        chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
        status=status.value, valid_fraction=float(frac[0]), screened_by=by.value,
        geometry_wkb=chip_wkb(grid, ref), detail=describe_fractions(frac),
    )


def prepare(model: ModelPackage, chip: ReadyChip) -> ReadyChip:
    """The chip with its network input computed (scaled by its own scene's dtype, normalised), so the
    reader stage does this work and the inference stage only runs the model; the raw pixels are let go."""
    x = model.preprocess(chip.data[None], chip.scene.dtype)[0]
    return ReadyChip(chip.unit_id, chip.scene, chip.ref, np.empty((0,), chip.data.dtype), chip.valid_fraction, x)


def preprocess(model: ModelPackage, batch: Sequence[ReadyChip], out: Optional[np.ndarray] = None) -> np.ndarray:
    """The network input for a batch: every chip scaled by its own scene's dtype, then normalised
    (chips already ``prepare``d are taken as they are). ``out``: a buffer of at least the batch's
    size to fill (a runner reuses one: fresh pages for every batch cost more than the copy)."""
    shape = (len(batch), len(model.bands), model.chip_size, model.chip_size)
    x = out[:len(batch)] if out is not None and out.shape[0] >= len(batch) and out.shape[1:] == shape[1:] \
        else np.empty(shape, dtype=np.float32)
    by_dtype: Dict[str, List[int]] = {}
    for i, chip in enumerate(batch):
        if chip.x is not None:
            x[i] = chip.x
        else:
            by_dtype.setdefault(chip.scene.dtype, []).append(i)
    for dtype, index in by_dtype.items():
        x[index] = model.preprocess(np.stack([batch[i].data for i in index]), dtype)
    return x


@dataclass(frozen=True, slots=True)
class InferredBatch:
    chips: Tuple[ChipRecord, ...]
    detections: Tuple[DetectionRecord, ...]


def infer(predictor: Predictor, model: ModelPackage, batch: Sequence[ReadyChip], grid: ChipGrid,
          buffer: Optional[np.ndarray] = None) -> InferredBatch:
    """One forward pass over a batch: a chip record per chip and a detection per chip at or over the
    model's threshold, with its activity footprint. ``buffer``: see ``preprocess``."""
    if not batch:
        return InferredBatch((), ())
    prediction = predictor.predict_normalised(preprocess(model, batch, buffer))
    cell_maps = getattr(prediction, "cells", None)
    chips: List[ChipRecord] = []
    detections: List[DetectionRecord] = []
    for i, (ready, raw) in enumerate(zip(batch, prediction.scores)):
        score = float(raw)
        scene, ref = ready.scene, ready.ref
        wkb = chip_wkb(grid, ref)
        chips.append(ChipRecord(
            chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
            status=ChipStatus.INFERRED.value, valid_fraction=ready.valid_fraction,
            screened_by=Screening.EXACT.value, geometry_wkb=wkb, score=score,
        ))
        if score >= model.threshold:
            activity, n_cells = activity_footprint(grid, ref.col, ref.row,
                                                   None if cell_maps is None else cell_maps[i])
            detections.append(DetectionRecord(
                chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
                score=score, label=model.positive_class, model_id=model.model_id, geometry_wkb=wkb,
                activity_wkb=None if activity is None else shapely.to_wkb(activity), active_cells=n_cells,
            ))
    return InferredBatch(tuple(chips), tuple(detections))


def activity_footprint(grid: ChipGrid, col: int, row: int,
                       cells: Optional[np.ndarray]) -> Tuple[Optional[BaseGeometry], int]:
    """The chip's active cells as one MultiPolygon in the grid CRS, and how many there are.

    When no cell reaches CELL_THRESHOLD (the chip score and the map disagree), the single most
    active cell stands for the detection, so every detection has a footprint."""
    if cells is None or np.ndim(cells) != 2 or cells.size == 0:
        return None, 0
    g_rows, g_cols = cells.shape
    cs_x = grid.size_m / g_cols
    cs_y = grid.size_m / g_rows
    active = np.argwhere(cells >= CELL_THRESHOLD)
    if len(active) == 0:
        active = np.array([np.unravel_index(int(np.argmax(cells)), cells.shape)])
    left = col * grid.size_m
    top = (row + 1) * grid.size_m
    boxes = shapely.box(left + active[:, 1] * cs_x, top - (active[:, 0] + 1) * cs_y,
                        left + (active[:, 1] + 1) * cs_x, top - active[:, 0] * cs_y)
    # The cells never overlap: a coverage union dissolves their shared edges far faster than union_all.
    union = shapely.coverage_union_all(boxes)
    if union.geom_type == "Polygon":
        union = shapely.MultiPolygon([union])
    return union, int(len(active))


def detection_feature(d: DetectionRecord, run_id: str) -> Dict[str, Any]:
    """A detection as the GeoJSON Feature of a ``features`` event (properties: names.DETECTION_PROPERTIES)."""
    return {
        "type": "Feature",
        "geometry": mapping(shapely.from_wkb(d.geometry_wkb)),
        "properties": {
            "chip_id": d.chip_id, "aoi_id": d.aoi_id, "scene_id": d.scene_id, "date": d.date,
            "score": round(d.score, 5), "label": d.label, "model_id": d.model_id, "run_id": run_id,
        },
    }
