"""Training: chips as a run sees them, targets, the place-held-out split, a tiny run, resume, fine-tune."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from groundbreak.grid import ChipGrid
from groundbreak.labels import IGNORE, NEGATIVE, POSITIVE, LabelPolygon, LabelSet, read_labels
from groundbreak.modelpack import DEFAULT_DTYPE_SCALING, DEFAULT_MEAN, DEFAULT_STD
from groundbreak.train import (
    ChipSet,
    SceneChips,
    TrainConfig,
    average_precision,
    best_threshold,
    build_chip_set,
    chip_targets,
    extract_scene_chips,
    load_scenes,
    split_by_place,
    train,
)

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
TINY = TrainConfig(architecture="resnet18-w8", epochs=2, steps_per_epoch=2, batch_size=4, lr=3e-3, seed=3,
                   val_fraction=0.3, patience=5, threads=2)


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
        LabelPolygon(_lonlat(box(x0, y0 + s, x0 + s, y0 + 2 * s)), POSITIVE, day + _dt.timedelta(1), day + _dt.timedelta(1), "", "t"),
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
    sparse = chip_targets(chips, GRID, labels, unlabelled="ignore")
    assert sparse.chip.tolist()[4] == -1  # nothing labelled touches it on this date


def test_chips_are_screened_exactly_as_a_run_screens_them(world, tmp_path):
    from groundbreak.aoi import read_aois
    from groundbreak.grid import grid_for
    from groundbreak.modelpack import make_random_package
    from groundbreak.pipeline import RunOptions, run_detection
    from groundbreak.plan import make_plan
    from groundbreak.scene import discover_scenes
    import sqlite3

    scene = discover_scenes([str(world.scene_paths[0])])[0]
    chips, grid = extract_scene_chips(scene, min_valid=0.5, cache_dir=tmp_path / "cache")
    again, _ = extract_scene_chips(scene, min_valid=0.5, cache_dir=tmp_path / "cache")  # from the cache
    assert np.array_equal(again.data, chips.data) and again.dropped == chips.dropped
    assert len(list((tmp_path / "cache" / "chips").iterdir())) == 1

    # the same scene through `groundbreak run` (AOI = the scene's footprint, as training plans it)
    pkg = make_random_package(tmp_path / "pkg", width=8)
    from groundbreak.train import scene_grid

    _, aoi = scene_grid(scene, chip_px=256, gsd=2.0)
    plan = make_plan([aoi], [scene], grid)
    out = tmp_path / "run.gpkg"
    run_detection(plan, pkg, out, options=RunOptions(min_valid=0.5, runtime="eager"))
    conn = sqlite3.connect(out)
    rows = conn.execute("SELECT chip_id, status FROM chips").fetchall()
    conn.close()
    inferred = sorted(c for c, s in rows if s == "inferred")
    assert sorted(chips.chip_ids(grid)) == inferred
    dropped = {}
    for _, s in rows:
        if s != "inferred":
            dropped[s] = dropped.get(s, 0) + 1
    assert chips.dropped == dropped and sum(dropped.values()) > 0  # the world has a nodata edge


def test_split_holds_out_whole_places():
    groups = [f"block:32614:{i % 7}:{i % 3}" for i in range(200)] + ["site:a"] * 9 + ["site:b"] * 5
    train_idx, val_idx = split_by_place(groups, 0.3, seed=0)
    assert sorted(np.r_[train_idx, val_idx].tolist()) == list(range(len(groups)))
    assert not {groups[i] for i in train_idx} & {groups[i] for i in val_idx}
    assert 0 < len(val_idx) < len(groups)
    again = split_by_place(groups, 0.3, seed=0)
    assert np.array_equal(again[1], val_idx)
    assert not np.array_equal(split_by_place(groups, 0.3, seed=1)[1], val_idx) or len(set(groups)) < 3


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


def test_metrics_known_answers():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.zeros(3), np.ones(3)))
    t, f1 = best_threshold(y, s)
    assert f1 == pytest.approx(0.8) and 0.1 < t <= 0.7


def _val_loss(net, data, idx):
    from groundbreak.train import _predict

    return _predict(net, data, idx)[1]


@pytest.mark.slow
def test_tiny_training_lowers_validation_loss_and_writes_a_package(chipset, tmp_path):
    from groundbreak.model import load_model_package
    from groundbreak.network import build_network

    # a high rate so that six steps of four chips move the network measurably
    cfg = replace(TINY, epochs=2, steps_per_epoch=3, lr=0.01)
    _, val_idx = split_by_place(chipset.groups, cfg.val_fraction, cfg.seed)
    assert len(val_idx)
    before = _val_loss(build_network(cfg.architecture, 4, seed=cfg.seed), chipset, val_idx)
    events = []
    result = train(cfg, chipset, tmp_path / "m", command="groundbreak train --test", demo=True,
                   progress=lambda *a: events.append(a[0]))
    after = min(h["val_loss"] for h in result.history)
    assert after < before - 0.02, (before, [h["val_loss"] for h in result.history])
    pkg = load_model_package(tmp_path / "m")
    assert pkg.demo and pkg.architecture == "resnet18-w8" and 0.2 <= pkg.threshold <= 0.9
    card = pkg.card_path.read_text()
    assert "groundbreak train --test" in card and "DEMO" in card and "Split held out by place" in card
    doc = json.loads((tmp_path / "m" / "training.json").read_text())
    assert doc["config"]["seed"] == 3 and len(doc["history"]) == 2
    assert events.count("epoch") == 2 and events.count("train") == 6


@pytest.mark.slow
def test_checkpoint_resume_gives_the_same_weights_as_an_uninterrupted_run(chipset, tmp_path):
    full = train(TINY, chipset, tmp_path / "full", checkpoint_dir=tmp_path / "ck-full")

    class Stop(Exception):
        pass

    def stop_in_epoch_2(stage, done, total, info):
        if stage == "train" and info["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(TINY, chipset, tmp_path / "cut", checkpoint_dir=tmp_path / "ck-cut", progress=stop_in_epoch_2)
    assert (tmp_path / "ck-cut" / "last.pt").is_file()
    resumed = train(TINY, chipset, tmp_path / "cut", checkpoint_dir=tmp_path / "ck-cut", overwrite=True)
    assert resumed.resumed_from_epoch == 1 and full.resumed_from_epoch == 0
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    assert resumed.package.sha256 == full.package.sha256
    # a finished run re-run with a smaller epoch budget trains nothing and writes the best weights again
    cut = train(replace(TINY, epochs=1), chipset, tmp_path / "again", checkpoint_dir=tmp_path / "ck-cut")
    assert cut.resumed_from_epoch == 2 and len(cut.history) == 2
    assert cut.package.sha256 == full.package.sha256


@pytest.mark.slow
def test_fine_tune_from_a_package_keeps_its_architecture(chipset, tmp_path):
    from groundbreak.modelpack import make_random_package

    base = make_random_package(tmp_path / "base", width=8, seed=5)
    cfg = replace(TINY, epochs=1, steps_per_epoch=1, architecture="resnet18-w32", batchnorm="frozen")
    result = train(cfg, chipset, tmp_path / "ft", init=tmp_path / "base")
    assert result.package.architecture == "resnet18-w8"
    assert result.package.sha256 != base.sha256
    assert "fine-tuned from" in result.package.card_path.read_text()


def test_bad_configuration_is_a_usage_error(chipset, tmp_path):
    from groundbreak.errors import OutputError, UsageError

    with pytest.raises(UsageError, match="batch-size"):
        train(replace(TINY, batch_size=1), chipset, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        train(TINY, chipset, tmp_path / "full")
