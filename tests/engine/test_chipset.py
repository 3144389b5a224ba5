"""Chips for training and evaluation: targets, screening as in a run, the cache, the run's scene rules."""

from __future__ import annotations

import datetime as _dt
import sqlite3

import numpy as np
import pytest
import shapely
from conftest import write_scene
from shapely.geometry import box

from groundbreak.chipset import (
    ChipSet,
    ChipSpec,
    SceneChips,
    Unlabelled,
    build_chip_set,
    chip_targets,
    extract_scene_chips,
    labelled_chips,
    load_scenes,
    scene_grid,
)
from groundbreak.errors import ResolutionError, ScenesUnusableError, UsageError
from groundbreak.grid import ChipGrid
from groundbreak.labels import IGNORE, POSITIVE, LabelPolygon, LabelSet, read_labels
from groundbreak.modelpack import DEFAULT_DTYPE_SCALING, DEFAULT_MEAN, DEFAULT_STD
from groundbreak.train import split_by_place

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from groundbreak.world import generate_world, test_spec

    return generate_world(tmp_path_factory.mktemp("world") / "w", test_spec(1))


@pytest.fixture(scope="module")
def chipset(world, tmp_path_factory) -> ChipSet:
    scenes = load_scenes([str(p) for p in world.scene_paths])
    return build_chip_set(scenes, read_labels(world.labels_gpkg), mean=DEFAULT_MEAN, std=DEFAULT_STD,
                          scaling=DEFAULT_DTYPE_SCALING, cache_dir=tmp_path_factory.mktemp("cache"))


def _lonlat(geom):
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32614", "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _scene_chips(cols, rows, date=_dt.date(2024, 5, 9)) -> SceneChips:
    n = len(cols)
    return SceneChips("s", date, "uint16", 32614, np.zeros((n, 4, 8, 8), np.uint16), np.asarray(cols),
                      np.asarray(rows), np.ones(n, np.float32), {})


def test_chip_targets_follow_the_one_percent_rule_and_fill_cells():
    s = GRID.size_m
    c0, r0 = 977, 10173
    x0, y0 = c0 * s, r0 * s
    # covers the eastern half of chip (c0, r0) and 0.5% (a 2.56 m strip) of its eastern neighbour
    site = box(x0 + s / 2, y0, x0 + s + 2.56, y0 + s)
    small = box(x0 + 2 * s, y0, x0 + 2 * s + 0.03 * s, y0 + 0.5 * s)  # 1.5% of chip (c0 + 2, r0)
    day = _dt.date(2024, 5, 9)
    labels = LabelSet((
        LabelPolygon(_lonlat(site), POSITIVE, day, day, "site-a", "t"),
        LabelPolygon(_lonlat(small), POSITIVE, day, day, "", "t"),
        LabelPolygon(_lonlat(box(x0 + 3 * s, y0, x0 + 4 * s, y0 + s)), IGNORE, day, day, "", "t"),
        LabelPolygon(_lonlat(box(x0, y0 + s, x0 + s, y0 + 2 * s)), POSITIVE, day + _dt.timedelta(1),
                     day + _dt.timedelta(1), "", "t"),
    ), ("t",))
    chips = _scene_chips([c0, c0 + 1, c0 + 2, c0 + 3, c0], [r0, r0, r0, r0, r0 + 1])
    t = chip_targets(chips, GRID, labels)
    # positive, 0.5% (negative), 1.5% (positive), ignored (left out), positive only on another date (negative)
    assert t.chip.tolist() == [1, 0, 1, -1, 0]
    # cells: the eastern 8 columns of chip 0 are covered, the western ones not; 2.56 m of a 32 m cell
    assert t.cells[0][:, 8:].min() > 0.99 and t.cells[0][:, :8].max() < 1e-3
    assert t.cells[1][:, 0] == pytest.approx(np.full(16, 0.08), abs=0.01) and t.cells[1][:, 1:].max() < 1e-3
    # row 0 is north: the 15.36 m strip fills the southern half of column 0 to 15.36 / 32
    assert t.cells[2][8:, 0] == pytest.approx(np.full(8, 0.48), abs=0.01) and t.cells[2][:8].max() < 1e-3
    assert t.cells[4].max() < 1e-6  # touches the site only through reprojection rounding
    # the site is one place, whichever block its chips fall in; other chips get their grid block
    assert t.groups[0] == t.groups[1] == "site:site-a"
    assert t.groups[4].startswith("block:32614:")
    assert chip_targets(chips, GRID, labels, negative=True).chip.tolist() == [0] * 5
    sparse = chip_targets(chips, GRID, labels, unlabelled=Unlabelled.IGNORE)
    # only the chip nothing labelled touches on this date is left out; the others keep their targets
    assert sparse.chip.tolist() == [1, 0, 1, -1, -1]
    assert chip_targets(chips, GRID, labels, unlabelled="ignore").chip.tolist() == sparse.chip.tolist()
    with pytest.raises(UsageError, match="unlabelled='sometimes'"):
        chip_targets(chips, GRID, labels, unlabelled="sometimes")


def test_chips_are_screened_exactly_as_a_run_screens_them(world, tmp_path):
    from groundbreak.modelpack import make_random_package
    from groundbreak.pipeline import RunOptions, run_detection
    from groundbreak.plan import make_plan

    scene = load_scenes([str(world.scene_paths[0])])[0]
    chips, grid = extract_scene_chips(scene, min_valid=0.5, cache_dir=tmp_path / "cache")
    again, _ = extract_scene_chips(scene, min_valid=0.5, cache_dir=tmp_path / "cache")  # from the cache
    assert np.array_equal(again.data, chips.data) and again.dropped == chips.dropped
    assert len(list((tmp_path / "cache" / "chips").iterdir())) == 1

    # the same scene through `groundbreak run` (AOI = the scene's footprint, as training plans it)
    pkg = make_random_package(tmp_path / "pkg", width=8)
    _, aoi = scene_grid(scene, chip_px=256, gsd=2.0)
    plan = make_plan([aoi], [scene], grid)
    out = tmp_path / "run.gpkg"
    run_detection(plan, pkg, out, options=RunOptions(min_valid=0.5, runtime="eager"))
    conn = sqlite3.connect(out)
    rows = conn.execute("SELECT chip_id, status FROM chips").fetchall()
    conn.close()
    inferred = sorted(c for c, s in rows if s == "inferred")
    assert sorted(chips.chip_ids(grid)) == inferred
    dropped: dict = {}
    for _, s in rows:
        if s != "inferred":
            dropped[s] = dropped.get(s, 0) + 1
    assert chips.dropped == dropped and sum(dropped.values()) > 0  # the world has a nodata edge


def test_the_chip_cache_lives_in_the_engine_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDBREAK_CACHE", str(tmp_path / "gbcache"))
    path = write_scene(tmp_path / "scene_20240501.tif", nodata_cols=40)
    scene = load_scenes([str(path)])[0]
    chips, _ = extract_scene_chips(scene)
    files = list((tmp_path / "gbcache" / "train" / "chips").iterdir())
    assert len(files) == 1 and files[0].name.startswith(scene.scene_id + "-") and len(chips.cols) > 0
    # a cached entry is what extraction gives, not a second, different extraction
    again, _ = extract_scene_chips(scene)
    assert np.array_equal(again.data, chips.data) and np.array_equal(again.cols, chips.cols)
    assert len(list(files[0].parent.iterdir())) == 1


def test_a_scene_far_from_the_model_resolution_is_refused_unless_resampling_is_allowed(tmp_path):
    coarse = load_scenes([str(write_scene(tmp_path / "coarse_20240501.tif", gsd=5.0, size=(300, 260)))])
    with pytest.raises(ResolutionError, match="5.00 m pixels but model expects 2.00 m") as err:
        list(labelled_chips([], coarse, None, spec=ChipSpec()))
    assert "--allow-resample" in err.value.hint
    items = list(labelled_chips([], coarse, None, spec=ChipSpec(), allow_resample=True))
    assert len(items) == 1 and items[0].negative and len(items[0].keep) > 0
    assert (items[0].targets.chip[items[0].keep] == 0).all()  # an all-negative scene has only negatives


def test_every_problem_of_every_scene_is_reported_before_any_chip_is_read(tmp_path):
    undated = write_scene(tmp_path / "nodate.tif", date=None)
    coarse = write_scene(tmp_path / "coarse_20240501.tif", gsd=5.0, size=(300, 260))
    scenes = load_scenes([str(undated), str(coarse)])
    with pytest.raises(ScenesUnusableError) as err:
        next(labelled_chips([], scenes, None))
    codes = sorted(p["code"] for p in err.value.problems)
    assert codes == ["resolution_mismatch", "scene_date_missing"], err.value.problems
    assert not (tmp_path / "cache" / "groundbreak" / "train").exists()  # nothing was extracted


def test_world_chipset_has_positives_and_places(world, chipset):
    s = chipset.summary()
    assert s["positives"] >= 2 and s["chips"] > s["positives"]
    assert chipset.x.dtype == np.float16 and chipset.x.shape[1:] == (4, 256, 256)
    # a positive chip-date belongs to its site's place on every date
    pos_groups = {chipset.groups[i] for i in np.flatnonzero(chipset.y > 0.5)}
    assert all(g.startswith("site:") for g in pos_groups)
    train_idx, val_idx = split_by_place(chipset.groups, 0.3, seed=3)
    assert not {chipset.groups[i] for i in train_idx} & {chipset.groups[i] for i in val_idx}
    assert not {chipset.chip_ids[i] for i in train_idx} & {chipset.chip_ids[i] for i in val_idx}
    # the chip set is the labelled chips, in order: the generator evaluation scores
    items = list(labelled_chips(load_scenes([str(p) for p in world.scene_paths]), [], read_labels(world.labels_gpkg)))
    assert tuple(c for item in items for c in item.chip_ids()) == chipset.chip_ids
    assert sum(sum(item.chips.dropped.values()) for item in items) == sum(chipset.dropped.values()) > 0
