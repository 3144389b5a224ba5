"""Planning at fleet scale: the tiled AOI-to-chips path gives exactly ``grid.cells_intersecting``'s chips."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from groundbreak.grid import ChipGrid
from groundbreak.plan import aoi_cells

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
S = GRID.size_m
X0, Y0 = 400 * S, 9000 * S  # on the chip grid


def test_tiled_cells_equal_the_grid_rule_on_awkward_geometries():
    rng = np.random.default_rng(7)
    radii = 40_000 * (0.7 + 0.3 * rng.random(90))
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    ring = list(zip(X0 + radii * np.cos(angles), Y0 + radii * np.sin(angles)))  # star-shaped: valid
    blob = Polygon(ring)
    holed = blob.difference(box(X0 - 9_000, Y0 - 9_000, X0 + 9_000, Y0 + 9_000))
    geometries = [
        blob,  # ~4,000 km², tiles inside, partly covered and outside
        holed,  # a hole the size of many tiles
        MultiPolygon([box(X0, Y0, X0 + 30 * S, Y0 + 30 * S), box(X0 + 50 * S, Y0, X0 + 90 * S, Y0 + 7 * S)]),
        box(X0, Y0, X0 + 32 * S, Y0 + 32 * S),  # edges exactly on chip and tile lines
        box(X0 + 1e-9, Y0 - 1e-9, X0 + 48 * S - 1e-9, Y0 + 17 * S),  # nanometre slivers across lines
        shapely.buffer(shapely.Point(X0, Y0), 25_000, quad_segs=64),
        box(X0 + 10, Y0 + 10, X0 + 100, Y0 + 100),  # a 100 m site: one chip
    ]
    for geom in geometries:
        assert sorted(aoi_cells(GRID, geom)) == sorted(GRID.cells_intersecting(geom))
        assert len(set(aoi_cells(GRID, geom))) == len(aoi_cells(GRID, geom))
