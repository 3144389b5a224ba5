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
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import shapely
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from .aoi import AOI, geodesic_area_km2
from .errors import NoOverlapError
from .grid import DEFAULT_BLOCK_CHIPS, ChipGrid, to_grid_crs
from .scene import Scene

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
        hits = (shapely.intersects(footprint, cell_boxes) & ~shapely.touches(footprint, cell_boxes)) if len(cells) else []
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
