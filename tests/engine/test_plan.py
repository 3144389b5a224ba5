"""Planning: one shared queue of AOI-independent work units, deduplicated chips, clear no-overlap errors."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from conftest import ORIGIN, write_scene
from pyproj import Transformer
from shapely.geometry import box

from groundbreak.aoi import AOI
from groundbreak.errors import NoOverlapError
from groundbreak.grid import ChipGrid
from groundbreak.plan import make_plan
from groundbreak.scene import open_scene

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
X0, Y1 = ORIGIN
TO_LL = Transformer.from_crs("EPSG:32614", "EPSG:4326", always_xy=True)


def aoi(aoi_id, geom):
    ll = shapely.transform(shapely.segmentize(geom, 20.0),
                           lambda xy: np.column_stack(TO_LL.transform(xy[:, 0], xy[:, 1])))
    return AOI(aoi_id, ll, "test", "EPSG:32614")


def test_units_are_blocks_of_one_scene_and_cover_every_chip_once(tmp_path):
    scenes = [open_scene(write_scene(tmp_path / "a_20240501.tif", size=(1536, 1280))),
              open_scene(write_scene(tmp_path / "b_20240601.tif", size=(1536, 1280), seed=1))]
    plan = make_plan([aoi("x", box(X0 + 5, Y1 - 2555, X0 + 3067, Y1 - 5))], scenes, GRID, block_chips=2)
    assert plan.chips_planned == 2 * 6 * 5 and plan.ground_chips == 30
    for unit in plan.units:
        cols = {c.col // 2 for c in unit.chips}
        rows = {c.row // 2 for c in unit.chips}
        assert cols == {unit.block[0]} and rows == {unit.block[1]}  # one block
        assert unit.unit_id.startswith(scenes[unit.scene_index].scene_id + "@")
    keys = [(u.scene_index, c.chip_id) for u in plan.units for c in u.chips]
    assert len(keys) == len(set(keys)) == 60
    assert len({u.unit_id for u in plan.units}) == len(plan.units)
    # Deterministic: the same inputs give the same queue.
    again = make_plan([aoi("x", box(X0 + 5, Y1 - 2555, X0 + 3067, Y1 - 5))], scenes, GRID, block_chips=2)
    assert [(u.unit_id, [c.chip_id for c in u.chips]) for u in again.units] == \
        [(u.unit_id, [c.chip_id for c in u.chips]) for u in plan.units]


def test_area_figures(tmp_path):
    scene = open_scene(write_scene(tmp_path / "a_20240501.tif", size=(768, 640)))
    # Half of this 2 km² AOI lies east of the 1.536 km-wide scene.
    plan = make_plan([aoi("x", box(X0, Y1 - 1000, X0 + 2000, Y1))], [scene], GRID)
    assert plan.aoi_km2 == pytest.approx(2.0, rel=2e-3)
    assert plan.scanned_km2 == pytest.approx(1.536, rel=2e-3)
    # Regression: the AOI's edges lie on chip edges, and the scene's east edge too. Neither the
    # AOI's round-trip slivers nor chips merely touching the scene used to be left out (14 chips).
    assert plan.ground_chips == plan.chips_planned == 2 * 3


def test_chips_from_a_previous_output_as_aoi_plan_just_those_chips(tmp_path):
    # Detections (chip squares) re-used as AOIs, a natural follow-up: no neighbours creep in.
    scene = open_scene(write_scene(tmp_path / "a_20240501.tif", size=(1536, 1536)))
    squares = [aoi("c%d" % i, GRID.polygon(977 + i, 10175 - i)) for i in range(3)]
    plan = make_plan(squares, [scene], GRID)
    assert sorted(c.chip_id for u in plan.units for c in u.chips) == [
        GRID.chip_id(977 + i, 10175 - i) for i in range(3)]


def test_a_scene_outside_every_aoi_is_skipped_not_fatal(tmp_path):
    inside = open_scene(write_scene(tmp_path / "in_20240501.tif"))
    outside = open_scene(write_scene(tmp_path / "out_20240501.tif", origin=(X0 + 20_000, Y1)))
    plan = make_plan([aoi("x", box(X0 + 5, Y1 - 500, X0 + 500, Y1 - 5))], [inside, outside], GRID)
    assert plan.skipped_scenes == ("out_20240501",)
    assert {u.scene_index for u in plan.units} == {0}


def test_no_overlap_names_both_extents(tmp_path):
    scene = open_scene(write_scene(tmp_path / "a_20240501.tif"))
    with pytest.raises(NoOverlapError) as info:
        make_plan([aoi("x", box(X0 + 50_000, Y1, X0 + 51_000, Y1 + 1000))], [scene], GRID)
    message = str(info.value)
    assert "AOIs span lon" in message and "a_20240501 spans lon" in message
    assert "CRS" in info.value.hint


def test_fingerprint_changes_with_what_decides_results(tmp_path):
    scene = open_scene(write_scene(tmp_path / "a_20240501.tif"))
    a = aoi("x", box(X0 + 5, Y1 - 500, X0 + 500, Y1 - 5))
    plan = make_plan([a], [scene], GRID)
    base = plan.fingerprint({"model": "m", "min_valid": 0.5})
    assert base == make_plan([a], [scene], GRID).fingerprint({"model": "m", "min_valid": 0.5})
    assert base != plan.fingerprint({"model": "m", "min_valid": 0.6})
    renamed = AOI("y", a.geometry, "test", "EPSG:32614")
    assert base != make_plan([renamed], [scene], GRID).fingerprint({"model": "m", "min_valid": 0.5})
    other = make_plan([aoi("x", box(X0 + 5, Y1 - 600, X0 + 500, Y1 - 5))], [scene], GRID)
    assert base != other.fingerprint({"model": "m", "min_valid": 0.5})
