"""The ground-fixed chip grid: ids, bounds, UTM zones, AOI-shaped chip sets, stable ids across dates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import ORIGIN, write_scene
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject
from shapely.geometry import Polygon, box

from groundbreak.aoi import AOI
from groundbreak.errors import UsageError
from groundbreak.grid import ChipGrid, grid_for, to_grid_crs, utm_epsg
from groundbreak.plan import make_plan
from groundbreak.scene import open_scene
from groundbreak.view import SceneView

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
S = GRID.size_m  # 512 m
C0, R1 = int(ORIGIN[0] // S), int(ORIGIN[1] // S)  # chip col of the scenes' left edge, row above their top


def _lonlat(geom_utm, epsg: int = 32614):
    t = Transformer.from_crs("EPSG:%d" % epsg, "EPSG:4326", always_xy=True)
    return shapely.transform(shapely.segmentize(geom_utm, 16.0),
                             lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def _aoi(aoi_id: str, geom_utm) -> AOI:
    return AOI(aoi_id, _lonlat(geom_utm), "test", "EPSG:32614")


# -- ids and bounds -------------------------------------------------------------------------------
def test_chip_id_and_bounds_follow_the_ground():
    assert GRID.size_m == 512.0
    assert GRID.chip_id(977, 10175) == "32614_512_977_10175"
    assert GRID.bounds(977, 10175) == (977 * 512.0, 10175 * 512.0, 978 * 512.0, 10176 * 512.0)
    assert GRID.polygon(-1, 3).bounds == (-512.0, 1536.0, 0.0, 2048.0)
    # A different chip size or CRS never collides with this grid's ids.
    assert ChipGrid(32614, 256, 3.0).chip_id(977, 10175) != GRID.chip_id(977, 10175)
    assert ChipGrid(32613, 256, 2.0).chip_id(977, 10175) != GRID.chip_id(977, 10175)


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [
        (-99.15, 47.02, 32614),  # the NAIP series in North Dakota
        (-72.3, 18.5, 32618),  # Haiti
        (151.2, -33.9, 32756),  # Sydney: southern hemisphere
        (-180.0, 0.0, 32601),
        (180.0, 10.0, 32660),  # the antimeridian stays in zone 60
        (-96.0, 40.0, 32615),  # a zone boundary belongs to the zone east of it
    ],
)
def test_utm_zone(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_utm_zone_rejects_projected_coordinates():
    with pytest.raises(UsageError):
        utm_epsg(500000.0, 5210000.0)


def test_grid_for_picks_the_aoi_zone_and_refuses_degrees():
    aoi = box(-99.2, 47.0, -99.1, 47.05)
    assert grid_for([aoi], chip_px=256, gsd=2.0).epsg == 32614
    assert grid_for([aoi], chip_px=256, gsd=2.0, epsg=32613).epsg == 32613
    with pytest.raises(UsageError, match="metres"):
        grid_for([aoi], chip_px=256, gsd=2.0, epsg=4326)


# -- which chips ----------------------------------------------------------------------------------
def test_l_shaped_aoi_takes_its_polygon_not_its_bbox():
    x0, y1 = C0 * S, R1 * S
    # An L: the top row of 3 chips and the left column of 3 chips (inset so no edge sits on a chip edge).
    ell = Polygon([(x0 + 10, y1 - 10), (x0 + 3 * S - 10, y1 - 10), (x0 + 3 * S - 10, y1 - S + 10),
                   (x0 + S - 10, y1 - S + 10), (x0 + S - 10, y1 - 3 * S + 10), (x0 + 10, y1 - 3 * S + 10)])
    cells = GRID.cells_intersecting(ell)
    expected = {(C0, R1 - 1), (C0 + 1, R1 - 1), (C0 + 2, R1 - 1), (C0, R1 - 2), (C0, R1 - 3)}
    assert set(cells) == expected
    assert len(GRID.cells_intersecting(box(*ell.bounds))) == 9
    # Sorted north to south, then west to east.
    assert cells == sorted(cells, key=lambda cr: (-cr[1], cr[0]))


def test_an_aoi_edge_on_a_chip_edge_does_not_take_the_neighbour():
    x0, y0 = C0 * S, (R1 - 1) * S
    assert GRID.cells_intersecting(box(x0, y0, x0 + S, y0 + S)) == [(C0, R1 - 1)]
    # A 1 m sliver into the next chip does take it.
    assert len(GRID.cells_intersecting(box(x0, y0, x0 + S + 1, y0 + S))) == 2
    assert GRID.cells_intersecting(Polygon()) == []


def test_l_shaped_aoi_plans_only_its_chips(tmp_path):
    scene = open_scene(write_scene(tmp_path / "s.tif", size=(768, 768)))
    x0, y1 = ORIGIN
    ell = shapely.union(box(x0 + 10, y1 - 500, x0 + 1530, y1 - 10), box(x0 + 10, y1 - 1530, x0 + 500, y1 - 10))
    plan = make_plan([_aoi("L", ell)], [scene], GRID)
    ids = sorted(c.chip_id for u in plan.units for c in u.chips)
    assert len(ids) == 5 and len(set(ids)) == 5
    assert GRID.chip_id(C0 + 1, R1 - 2) not in ids  # the L's missing corner
    assert plan.ground_chips == 5


def test_overlapping_aois_share_chips(tmp_path):
    scenes = [open_scene(write_scene(tmp_path / "a_20240501.tif", size=(768, 768))),
              open_scene(write_scene(tmp_path / "b_20240601.tif", size=(768, 768), seed=1))]
    x0, y1 = ORIGIN
    a = _aoi("a", box(x0 + 10, y1 - 1000, x0 + 1000, y1 - 10))  # 2×2 chips, top-left
    b = _aoi("b", box(x0 + 600, y1 - 1500, x0 + 1500, y1 - 600))  # 2×2 chips, bottom-right
    plan = make_plan([a, b], scenes, GRID)
    per_scene = {}
    for unit in plan.units:
        per_scene.setdefault(unit.scene_index, []).extend(unit.chips)
    assert set(per_scene) == {0, 1}
    for chips in per_scene.values():
        ids = [c.chip_id for c in chips]
        assert len(ids) == len(set(ids)) == 7  # 4 + 4 - 1 shared
        labels = {c.chip_id: c.aoi_label for c in chips}
        assert labels[GRID.chip_id(C0 + 1, R1 - 2)] == "a,b"
        assert labels[GRID.chip_id(C0, R1 - 1)] == "a"
        assert labels[GRID.chip_id(C0 + 2, R1 - 3)] == "b"
    assert plan.chips_planned == 14 and plan.ground_chips == 7


# -- same ground square on every date -------------------------------------------------------------
def _bright_centroid(data: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(data[0] >= 3500)
    assert rows.size > 50
    return np.array([rows.mean(), cols.mean()])


def _write_reprojected(src_path: Path, dst_path: Path, epsg: int, res: float) -> Path:
    """The same ground in another CRS (as a provider delivering another zone would)."""
    with rasterio.open(src_path) as src:
        t = Transformer.from_crs(src.crs, "EPSG:%d" % epsg, always_xy=True)
        left, bottom, right, top = t.transform_bounds(*src.bounds)
        width, height = int((right - left) / res), int((top - bottom) / res)
        transform = from_origin(left, top, res, res)
        profile = dict(src.profile, crs="EPSG:%d" % epsg, transform=transform, width=width, height=height)
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                out = np.zeros((height, width), dtype=src.dtypes[0])
                reproject(rasterio.band(src, b), out, dst_transform=transform, dst_crs=profile["crs"],
                          resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
                dst.write(out, b)
                dst.set_band_description(b, src.descriptions[b - 1])
            dst.update_tags(**src.tags())
    return dst_path


def test_same_ground_square_on_shifted_and_reprojected_scenes(tmp_path):
    x0, y1 = ORIGIN
    # A bright square on the ground at (x0+700..x0+800, y1-300..y1-200) m, inside chip (C0+1, R1-1).
    ground_box = (x0 + 700, y1 - 300, x0 + 800, y1 - 200)

    def bright_px(origin):
        c0, r0 = int(round((ground_box[0] - origin[0]) / 2)), int(round((origin[1] - ground_box[3]) / 2))
        return (r0, r0 + 50, c0, c0 + 50)

    first = write_scene(tmp_path / "s_20240501.tif", bright_box=bright_px(ORIGIN))
    # A later date whose pixel grid is off by (+3 m, -5 m): 1.5 and 2.5 pixels.
    shifted_origin = (x0 + 3.0, y1 - 5.0)
    second = write_scene(tmp_path / "s_20240601.tif", origin=shifted_origin, seed=1,
                         bright_box=bright_px(shifted_origin))
    # The first date again, delivered in the neighbouring UTM zone at 2.5 m.
    third = _write_reprojected(first, tmp_path / "s_20240701.tif", 32613, 2.5)

    scenes = [open_scene(p) for p in (first, second, third)]
    aoi = _aoi("site", box(x0 + 20, y1 - 1000, x0 + 1000, y1 - 20))
    plan = make_plan([aoi], scenes, GRID)
    ids = {i: sorted(c.chip_id for u in plan.units if u.scene_index == i for c in u.chips) for i in range(3)}
    assert ids[0] == ids[1] == ids[2]
    assert len(ids[0]) == 4

    centroids = []
    for scene, aligned in zip(scenes, (True, False, False)):
        view = SceneView(scene, GRID, (1, 2, 3, 4))
        try:
            assert view.aligned is aligned
            centroids.append(_bright_centroid(view.read_chip(C0 + 1, R1 - 1).data))
        finally:
            view.close()
    # The square sits at chip pixel rows 100..150, cols 94..144 (centre 124.5, 118.5) on every date:
    # within half a pixel of resampling, not the 1.5-2.5 px of the raw grid offsets.
    expected = np.array([124.5, 118.5])
    for c in centroids:
        assert np.abs(c - expected).max() <= 0.75, centroids


def test_to_grid_crs_round_trips_lonlat():
    x0, y1 = ORIGIN
    utm = box(x0, y1 - 1000, x0 + 1000, y1)
    back = to_grid_crs(_lonlat(utm), "EPSG:4326", GRID)
    assert back.symmetric_difference(utm).area < 1.0  # m², after densified reprojection
