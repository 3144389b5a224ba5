"""Planning: AOIs × scenes → one shared queue of work units on the ground-fixed chip grid.

Cost follows chip count, never AOI count: chips from every AOI are deduplicated into one set per
scene, then grouped into AOI-independent blocks of the grid (work units). A 100 m site and a
50,000 km² metro are the same kind of entries in the same queue.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from .aoi import AOI, geodesic_area_km2, read_aois
from .errors import NoOverlapError, UsageError
from .grid import DEFAULT_BLOCK_CHIPS, ChipGrid, grid_for, to_grid_crs
from .masks import MaskRules
from .scene import Scene, discover_scenes
from .suitability import InputSpec, SceneFit, fit_scenes

if TYPE_CHECKING:
    from .reporter import Reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChipRef:
    col: int
    row: int
    chip_id: str
    aoi_ids: Tuple[str, ...]

    @property
    def aoi_label(self) -> str:
        return ",".join(self.aoi_ids)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """A block of chips of one scene: the unit an executor schedules (never a single chip)."""

    unit_id: str
    scene_index: int
    block: Tuple[int, int]
    chips: Tuple[ChipRef, ...]


@dataclass(frozen=True)
class Plan:
    grid: ChipGrid
    aois: Tuple[AOI, ...]
    scenes: Tuple[Scene, ...]
    units: Tuple[WorkUnit, ...]
    aoi_km2: float
    scanned_km2: float  # Σ over scenes of the AOI area that scene covers (km² per date, summed)
    ground_chips: int  # distinct ground squares over all dates
    skipped_scenes: Tuple[str, ...] = field(default=())  # scenes that miss every AOI
    #: How each scene is read for the model (band indexes, resolution), aligned with ``scenes``;
    #: empty for a plan made without a model (``make_plan`` alone).
    fits: Tuple[SceneFit, ...] = field(default=())

    @property
    def chips_planned(self) -> int:
        return sum(len(u.chips) for u in self.units)

    def fingerprint(self, extra: Dict[str, object]) -> str:
        """A stable hash of everything that decides the results (for resume checks and run ids)."""
        doc = {
            "grid": [self.grid.epsg, self.grid.chip_px, self.grid.gsd],
            "aois": sorted((a.aoi_id, shapely.to_wkb(a.geometry, hex=True)) for a in self.aois),
            # Scene content hashes are provenance, not identity: a scene repaired after a failed
            # chip must resume the same run (the pipeline warns when a scene's hash changed).
            "scenes": [(s.scene_id, s.date.isoformat()) for s in self.scenes],
            "extra": extra,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def scene_footprint(scene: Scene, grid: ChipGrid) -> BaseGeometry:
    """The scene's bounds as a polygon in the grid CRS (edges densified, so reprojection bends them)."""
    left, bottom, right, top = scene.bounds
    poly = box(left, bottom, right, top)
    step = max(right - left, top - bottom) / 32.0
    return to_grid_crs(poly, CRS.from_wkt(scene.crs_wkt), grid, densify_m=step)


def make_plan(
    aois: Sequence[AOI],
    scenes: Sequence[Scene],
    grid: ChipGrid,
    *,
    block_chips: int = DEFAULT_BLOCK_CHIPS,
) -> Plan:
    """Chips of every AOI on every scene that covers them, grouped into work units.

    Raises NoOverlapError when no AOI touches any scene (naming both extents).
    """
    aoi_grid = [(a.aoi_id, to_grid_crs(a.geometry, "EPSG:4326", grid)) for a in aois]
    union = shapely.union_all([g for _, g in aoi_grid])
    # AOI chips once: overlapping AOIs share chips instead of processing them twice.
    chip_aois: Dict[Tuple[int, int], List[str]] = defaultdict(list)
    for aoi_id, geom in aoi_grid:
        for cell in grid.cells_intersecting(geom):
            chip_aois[cell].append(aoi_id)
    cells = sorted(chip_aois, key=lambda cr: (-cr[1], cr[0]))
    cell_boxes = shapely.box(
        [c * grid.size_m for c, _ in cells],
        [r * grid.size_m for _, r in cells],
        [(c + 1) * grid.size_m for c, _ in cells],
        [(r + 1) * grid.size_m for _, r in cells],
    ) if cells else []

    units: List[WorkUnit] = []
    scanned_km2 = 0.0
    skipped: List[str] = []
    used_cells = set()
    for index, scene in enumerate(scenes):
        footprint = scene_footprint(scene, grid)
        covered = shapely.intersection(union, footprint)
        if covered.is_empty or covered.area == 0:
            skipped.append(scene.scene_id)
            continue
        scanned_km2 += covered.area / 1e6
        shapely.prepare(footprint)
        # A chip that only touches the scene's edge has no pixel on it: reading it would only
        # record a spurious nodata drop.
        hits = ((shapely.intersects(footprint, cell_boxes) & ~shapely.touches(footprint, cell_boxes))
                if len(cells) else [])
        blocks: Dict[Tuple[int, int], List[ChipRef]] = defaultdict(list)
        for (col, row), hit in zip(cells, hits):
            if not hit:
                continue
            used_cells.add((col, row))
            ref = ChipRef(col, row, grid.chip_id(col, row), tuple(sorted(chip_aois[(col, row)])))
            blocks[(col // block_chips, row // block_chips)].append(ref)
        for block in sorted(blocks, key=lambda b: (-b[1], b[0])):
            unit_id = "%s@%d_%d" % (scene.scene_id, block[0], block[1])
            units.append(WorkUnit(unit_id, index, block, tuple(blocks[block])))
    if not units:
        raise NoOverlapError(_no_overlap_message(aois, scenes, grid), hint=(
            "check that the AOI and the scenes cover the same place (open both in QGIS); "
            "an AOI in the wrong CRS is the usual cause"
        ))
    if skipped:
        log.info("%d scene(s) do not touch any AOI: %s", len(skipped), ", ".join(skipped))
    aoi_km2 = geodesic_area_km2(shapely.union_all([a.geometry for a in aois]))
    return Plan(
        grid=grid,
        aois=tuple(aois),
        scenes=tuple(scenes),
        units=tuple(units),
        aoi_km2=aoi_km2,
        scanned_km2=scanned_km2,
        ground_chips=len(used_cells),
        skipped_scenes=tuple(skipped),
    )


def _no_overlap_message(aois: Sequence[AOI], scenes: Sequence[Scene], grid: ChipGrid) -> str:
    a = shapely.union_all([x.geometry for x in aois]).bounds
    parts = ["no AOI overlaps any scene: AOIs span lon %.4f..%.4f, lat %.4f..%.4f" % (a[0], a[2], a[1], a[3])]
    from pyproj import Transformer

    for s in scenes[:5]:
        t = Transformer.from_crs(CRS.from_wkt(s.crs_wkt), "EPSG:4326", always_xy=True)
        b = t.transform_bounds(*s.bounds)
        parts.append("%s spans lon %.4f..%.4f, lat %.4f..%.4f" % (s.scene_id, b[0], b[2], b[1], b[3]))
    if len(scenes) > 5:
        parts.append("… and %d more scenes" % (len(scenes) - 5))
    return "; ".join(parts)


def footprint_aoi(scene: Scene) -> AOI:
    """The scene's whole footprint as an AOI (lon/lat), for runs over everything a scene covers
    (training and evaluation chips)."""
    left, bottom, right, top = scene.bounds
    tr = Transformer.from_crs(CRS.from_wkt(scene.crs_wkt), "EPSG:4326", always_xy=True)
    poly = shapely.segmentize(box(left, bottom, right, top), max(right - left, top - bottom) / 16)
    lonlat = shapely.transform(poly, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return AOI(aoi_id=scene.scene_id, geometry=lonlat, source=scene.path, source_crs="EPSG:4326")


def plan_inputs(
    aois: Sequence[Union[str, AOI]],
    scenes: Sequence[Union[str, Scene]],
    model: InputSpec,
    *,
    aoi_id_field: Optional[str] = None,
    band_order: Optional[Sequence[str]] = None,
    date: Optional[str] = None,
    grid_epsg: Optional[int] = None,
    mask_rules: Optional[MaskRules] = None,
    allow_resample: bool = False,
    block_chips: int = DEFAULT_BLOCK_CHIPS,
    reporter: Optional["Reporter"] = None,
) -> Plan:
    """The plan stage: AOIs (files or AOI values) × scenes (specs or Scene values) → the shared queue.

    Every scene problem (bands, resolution, date, dtype) of every scene is reported at once; warnings
    (repaired AOIs, assumed band names, resampling, scenes outside every AOI) go to ``reporter``.
    """
    def warn(code: str, message: str, hint: str = "") -> None:
        if reporter is not None:
            reporter.warning(code, message, hint)

    if reporter is not None:
        reporter.stage("plan", "reading AOIs and scenes")
    aoi_list = [a for a in aois if isinstance(a, AOI)]
    paths = [str(a) for a in aois if not isinstance(a, AOI)]
    if paths:
        read, warnings = read_aois(paths, id_field=aoi_id_field)
        aoi_list.extend(read)
        for w in warnings:
            warn(w.code, w.message, w.hint)
    specs = [str(s) for s in scenes if not isinstance(s, Scene)]
    if date is not None and len(specs) > 1:
        raise UsageError("--date applies to one scene, but %d were given" % len(specs),
                         hint="put dates in file names or TIFFTAG_DATETIME, or use a STAC catalog")
    scene_list = [s for s in scenes if isinstance(s, Scene)]
    if specs:
        scene_list.extend(discover_scenes(specs, band_order=band_order, date=date, mask_rules=mask_rules,
                                          require_date=False))
    scene_list.sort(key=lambda s: (s.date, s.scene_id))
    fits = fit_scenes(scene_list, model, allow_resample=allow_resample)
    for scene, fit in zip(scene_list, fits):
        if scene.band_names_source.startswith("assumed"):
            warn("bands_assumed", "%s has no band labels; assuming %s" % (
                scene.scene_id, ", ".join(n for n in scene.band_names if n)),
                "if that is wrong, pass --band-order with the file's real order")
        if fit.resampled:
            warn("resampled", "%s has %.2f m pixels; it is resampled to the model's %.2f m chip grid%s" % (
                scene.scene_id, fit.resolution_m, fit.model_gsd,
                "" if _accepted(model, fit) else " (outside the model's validated %.1f-%.1f m)" % model.gsd_range),
                "" if _accepted(model, fit) else "use imagery near %.2f m for results the model was made for"
                % model.gsd)
    grid = grid_for([a.geometry for a in aoi_list], chip_px=model.chip_size, gsd=model.gsd, epsg=grid_epsg)
    plan = make_plan(aoi_list, scene_list, grid, block_chips=block_chips)
    plan = replace(plan, fits=fits)
    for scene_id in plan.skipped_scenes:
        warn("scene_outside_aoi", "scene %s does not overlap any AOI; skipped" % scene_id,
             "check the scene list, or widen the AOI")
    return plan


def fitted(plan: Plan, model: InputSpec, *, allow_resample: bool = False) -> Plan:
    """``plan`` with its scenes fitted to ``model`` (as plan_inputs does), for plans made by make_plan."""
    if plan.fits:
        return plan
    return replace(plan, fits=fit_scenes(plan.scenes, model, allow_resample=allow_resample))


def _accepted(model: InputSpec, fit: SceneFit) -> bool:
    lo, hi = model.gsd_range
    return lo <= fit.resolution_m <= hi
