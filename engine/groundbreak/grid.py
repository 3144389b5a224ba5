"""The ground-fixed chip grid.

A chip is a square of ``chip_px × gsd`` metres in a UTM CRS, anchored at the CRS origin, so chip
``(col, row)`` covers ``[col·s, (col+1)·s) × [row·s, (row+1)·s)``. The id depends only on the CRS,
the chip size and the ground position: the same id means the same ground square on every date,
whatever each scene's own pixel grid is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from .errors import UsageError

#: Chips are grouped into square blocks of this many chips a side to form work units.
DEFAULT_BLOCK_CHIPS = 16

#: Intersections thinner than this (metres) are reprojection noise, not AOI area.
_SLIVER_M = 1e-3


@dataclass(frozen=True, slots=True)
class ChipGrid:
    epsg: int
    chip_px: int
    gsd: float

    @property
    def size_m(self) -> float:
        return self.chip_px * self.gsd

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.epsg)

    @property
    def crs_string(self) -> str:
        return "EPSG:%d" % self.epsg

    def chip_id(self, col: int, row: int) -> str:
        return "%d_%g_%d_%d" % (self.epsg, self.size_m, col, row)

    def bounds(self, col: int, row: int) -> Tuple[float, float, float, float]:
        s = self.size_m
        return (col * s, row * s, (col + 1) * s, (row + 1) * s)

    def polygon(self, col: int, row: int) -> BaseGeometry:
        return box(*self.bounds(col, row))

    def cells_intersecting(self, geometry: BaseGeometry) -> List[Tuple[int, int]]:
        """(col, row) of every chip whose square intersects ``geometry`` (in the grid CRS) with
        positive area; sorted north to south, west to east."""
        if geometry.is_empty:
            return []
        s = self.size_m
        minx, miny, maxx, maxy = geometry.bounds
        c0, c1 = math.floor(minx / s), math.ceil(maxx / s)
        r0, r1 = math.floor(miny / s), math.ceil(maxy / s)
        cols = np.arange(c0, c1)
        rows = np.arange(r0, r1)
        if cols.size == 0 or rows.size == 0:
            return []
        out: List[Tuple[int, int]] = []
        shapely.prepare(geometry)
        # Row by row keeps memory flat for very large AOIs (a 50,000 km² metro is ~190k chips).
        for row in rows[::-1]:
            boxes = shapely.box(cols * s, row * s, (cols + 1) * s, (row + 1) * s)
            hit = shapely.intersects(geometry, boxes)
            if hit.any():
                parts = shapely.intersection(geometry, boxes[hit])
                inter = shapely.area(parts)
                b = shapely.bounds(parts)
                # An AOI whose edge lies on a chip edge comes back from its lon/lat round trip a
                # nanometre off: a sliver that thin is not a chip of the AOI.
                thick = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) > _SLIVER_M
                for col, area, ok in zip(cols[hit], inter, thick):
                    if area > 0 and ok:
                        out.append((int(col), int(row)))
        return out


def utm_epsg(lon: float, lat: float) -> int:
    """The WGS84 UTM zone EPSG code for a point (the regular 6° zones)."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise UsageError("coordinates %.4f, %.4f are not lon/lat" % (lon, lat))
    zone = min(int((lon + 180) // 6) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def grid_for(geometries_lonlat: Sequence[BaseGeometry], *, chip_px: int, gsd: float,
             epsg: int | None = None) -> ChipGrid:
    """The grid for a set of AOIs: the UTM zone of their combined centroid unless ``epsg`` is given."""
    if epsg is None:
        centre = shapely.union_all(list(geometries_lonlat)).centroid
        epsg = utm_epsg(centre.x, centre.y)
    crs = CRS.from_epsg(epsg)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise UsageError(
            "grid CRS EPSG:%d is not a projected CRS in metres" % epsg,
            hint="use a UTM zone (EPSG:326xx / 327xx) or omit --grid-epsg",
        )
    return ChipGrid(epsg=epsg, chip_px=chip_px, gsd=gsd)


def to_grid_crs(geometry: BaseGeometry, src_crs: CRS | str, grid: ChipGrid, *,
                densify_m: float | None = None) -> BaseGeometry:
    """Reproject a geometry into the grid CRS (densifying edges first so long straight edges stay
    straight on the ground)."""
    src = CRS.from_user_input(src_crs)
    if src.equals(grid.crs):
        return geometry
    if densify_m is not None:
        geometry = shapely.segmentize(geometry, densify_m)
    elif src.is_geographic:
        geometry = shapely.segmentize(geometry, 0.005)
    transformer = Transformer.from_crs(src, grid.crs, always_xy=True)

    def _xy(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geometry, _xy)


def chip_polygons(grid: ChipGrid, cells: Iterable[Tuple[int, int]]) -> List[BaseGeometry]:
    return [grid.polygon(c, r) for c, r in cells]
