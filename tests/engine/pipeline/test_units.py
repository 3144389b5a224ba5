"""Self-contained units: a UnitTask pickles, and running every unit on its own gives exactly the
records of the in-process run."""

from __future__ import annotations

import pickle
import sqlite3

import pytest
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

from groundbreak.masks import DropRule
from groundbreak.model import load_model_package
from groundbreak.names import RUN_STATS
from groundbreak.pipeline import RunOptions, RunStats, run_detection, run_unit, unit_tasks
from groundbreak.plan import plan_inputs

X0, Y1 = ORIGIN


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model_package(tiny_model)


def test_run_stats_are_the_names_clients_read():
    assert tuple(RunStats.__dataclass_fields__) == RUN_STATS


def test_units_run_anywhere_give_the_local_run_records(tmp_path, model):
    scenes = [write_scene(tmp_path / "a_20240501.tif", size=(1024, 768), cloud_box=(0, 300, 0, 300), seed=1),
              write_scene(tmp_path / "b_20240601.tif", size=(1024, 768), nodata_cols=300, seed=2)]
    aois = write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 1500, X0 + 1200, Y1 - 10),
                                                box(X0 + 900, Y1 - 1500, X0 + 2000, Y1 - 10)], ids=["west", "east"])
    plan = plan_inputs([aois], [str(s) for s in scenes], model, block_chips=2)
    tasks = unit_tasks(plan, model, rule=DropRule(0.5), runtime="eager", batch_size=3, threads=1)
    assert len(tasks) == len(plan.units) > 2
    shipped = [pickle.loads(pickle.dumps(t)) for t in tasks]  # what an executor sends to a worker
    assert shipped == tasks
    results = [run_unit(t) for t in shipped]
    from_units = {(c.scene_id, c.chip_id): (c.status, c.score) for r in results for c in r.chips}
    assert sum(len(t.chips) for t in tasks) == len(from_units) == plan.chips_planned

    out = tmp_path / "local.gpkg"
    run_detection(plan, model, out, options=RunOptions(runtime="eager"))
    conn = sqlite3.connect(str(out))
    try:
        local = {(s, c): (st, v) for s, c, st, v in conn.execute("SELECT scene_id, chip_id, status, score FROM chips")}
        local_dets = sorted(conn.execute("SELECT scene_id, chip_id FROM detections"))
    finally:
        conn.close()
    assert local.keys() == from_units.keys()
    for key, (status, score) in local.items():
        assert from_units[key][0] == status
        assert (score is None) == (from_units[key][1] is None)
        if score is not None:
            assert abs(from_units[key][1] - score) < 1e-6
    assert sorted((d.scene_id, d.chip_id) for r in results for d in r.detections) == local_dets


def test_done_chips_are_left_out_of_the_tasks(tmp_path, model):
    scene = write_scene(tmp_path / "a_20240501.tif", size=(1024, 768))
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 1500, X0 + 2000, Y1 - 10)], ids=["x"])
    plan = plan_inputs([aoi], [str(scene)], model)
    first = plan.units[0].chips[0].chip_id
    tasks = unit_tasks(plan, model, rule=DropRule(0.5), done={("a_20240501", first)})
    assert sum(len(t.chips) for t in tasks) == plan.chips_planned - 1
    assert all(c.chip_id != first for t in tasks for c in t.chips)
