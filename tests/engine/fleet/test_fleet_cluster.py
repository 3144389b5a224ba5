"""Fleet runs on a real Dask LocalCluster of process workers (2 workers × 1 thread, this machine's cores).

The fleet's output must be exactly what ``groundbreak run`` writes for the same inputs — the same
(chip, date) records, no duplicates — with overlapping and disjoint AOIs, when a worker is killed in
the middle of a unit, and when a scene turns out unreadable (its units fail, are split, and the
rest completes).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fleet_world import records, with_threshold, write_world
from scene_fixtures import truncate

from groundbreak.fleet import DaskExecutor, Ledger, RetryPolicy, UnitState, aggregate, plan_fleet, run_fleet
from groundbreak.fleet.runner import FleetRunner
from groundbreak.model import load_model_package
from groundbreak.pipeline import RunOptions, run_detection
from groundbreak.plan import plan_inputs

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       env={"OMP_NUM_THREADS": "1"})
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    return load_model_package(with_threshold(tiny_model, tmp_path_factory.mktemp("model") / "m", 0.4))


def reference(folder: Path, aoi: Path, scenes, model, options: RunOptions, name: str = "reference.gpkg") -> Path:
    out = folder / name
    plan = plan_inputs([str(aoi)], [str(s) for s in scenes], model)
    result = run_detection(plan, model, out, options=options)
    assert result.status == "ok"
    return out


def assert_same(fleet_gpkg: Path, run_gpkg: Path) -> None:
    chips, dets = records(fleet_gpkg)
    ref_chips, ref_dets = records(run_gpkg)
    assert len({(c[0], c[1]) for c in chips}) == len(chips), "a chip recorded twice"
    assert len({(d[0], d[1]) for d in dets}) == len(dets), "a detection recorded twice"
    assert [c[:5] for c in chips] == [c[:5] for c in ref_chips]
    assert [d[:4] for d in dets] == [d[:4] for d in ref_dets]
    for a, b in zip(dets, ref_dets):
        assert abs(a[4] - b[4]) < 1e-5


def test_fleet_output_equals_a_sequential_run(tmp_path, model, client):
    aoi, scenes = write_world(tmp_path)
    options = RunOptions(runtime="eager", threads=1, readers=1)
    ref = reference(tmp_path, aoi, scenes, model, options)
    planned = plan_fleet([str(aoi)], [str(s) for s in scenes], model, tmp_path / "run.ledger", options=options,
                         unit_chips=3)
    # Overlapping AOIs share chips: each (chip, date) is one unit's, once.
    assert planned.chips == sum(1 for _ in records(ref)[0])
    assert planned.units > 3
    result = run_fleet(tmp_path / "run.ledger", DaskExecutor(client=client, threads=1))
    assert result.status == "ok" and result.chips_done == planned.chips
    with Ledger(tmp_path / "run.ledger", readonly=True) as ledger:
        assert {r.state for r in ledger.rows()} == {UnitState.DONE}
        assert len({r.worker.split(":")[-1] for r in ledger.rows()}) == 2, "both workers took units"
    out = aggregate(tmp_path / "run.ledger", tmp_path / "fleet.gpkg")
    assert out.status == "ok" and out.chips == planned.chips
    assert_same(tmp_path / "fleet.gpkg", ref)
    # Three dates: the timeline stage ran once per AOI on the merged file.
    assert [t["aoi_id"] for t in out.timelines] == ["a", "b", "c", "site"]
    # The merged file is a run output: the same run id a sequential run of these inputs has.
    conn = sqlite3.connect(str(tmp_path / "fleet.gpkg"))
    try:
        fleet_run = conn.execute("SELECT run_id, status FROM runs").fetchall()
    finally:
        conn.close()
    conn = sqlite3.connect(str(ref))
    try:
        assert fleet_run == [(conn.execute("SELECT run_id FROM runs").fetchone()[0], "ok")]
    finally:
        conn.close()


def _wait(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.005)


def _count(ledger: Path, state: str) -> int:
    conn = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM units WHERE state=?", (state,)).fetchone()[0]
    finally:
        conn.close()


def test_a_worker_killed_mid_unit_loses_and_duplicates_nothing(tmp_path, model, client):
    aoi, scenes = write_world(tmp_path)
    # One chip per forward pass: units last long enough to be caught running.
    options = RunOptions(runtime="eager", threads=1, readers=1, batch_size=1)
    ref = reference(tmp_path, aoi, scenes, model, options)
    plan_fleet([str(aoi)], [str(s) for s in scenes], model, tmp_path / "run.ledger", options=options, unit_chips=4)
    executor = DaskExecutor(client=client, threads=1)
    executor.start()
    runner = FleetRunner(tmp_path / "run.ledger", executor, policy=RetryPolicy(backoff_s=0.0))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", runner.run()))
    thread.start()
    try:
        # A worker with a unit in hand, after the first unit is recorded (the model is loaded, so the
        # kill lands in the middle of reading and inferring).
        victim = {}

        def busy_worker() -> bool:
            if _count(tmp_path / "run.ledger", "done") < 1:
                return False
            processing = client.processing()
            busy = [addr for addr, keys in processing.items() if keys]
            if busy:
                victim["addr"] = busy[0]
            return bool(busy)

        _wait(busy_worker, what="a busy worker")
        pid = executor.worker_pids()[victim["addr"]]
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.status == "ok", result.stats()
    out = aggregate(tmp_path / "run.ledger", tmp_path / "fleet.gpkg")
    assert out.status == "ok"
    assert_same(tmp_path / "fleet.gpkg", ref)
    _wait(lambda: len(client.scheduler_info()["workers"]) == 2, what="the nanny to restart the worker")


def test_an_unreadable_scene_fails_its_split_units_and_the_rest_completes(tmp_path, model, client):
    aoi, scenes = write_world(tmp_path)
    options = RunOptions(runtime="eager", threads=1, readers=1)
    good = [scenes[0], scenes[2]]
    ref = reference(tmp_path, aoi, good, model, options, name="good.gpkg")
    plan_fleet([str(aoi)], [str(s) for s in scenes], model, tmp_path / "run.ledger", options=options, unit_chips=8)
    truncate(scenes[1], 0.6)  # replaced by an interrupted copy after planning
    result = run_fleet(tmp_path / "run.ledger", DaskExecutor(client=client, threads=1),
                       policy=RetryPolicy(max_attempts=2, backoff_s=0.0))
    assert result.status == "partial" and result.exit_code == 3
    with Ledger(tmp_path / "run.ledger", readonly=True) as ledger:
        bad = [r for r in ledger.rows() if r.scene_index == 1]
        top = [r for r in bad if r.parent is None]
        assert top and all(r.state is UnitState.SPLIT for r in top), "every unit of the bad scene was split"
        halves = [r for r in bad if r.parent is not None]
        # Both halves failed the same way (the file cannot be opened): splitting stopped there.
        assert len(halves) == 2 * len(top)
        assert all(r.state is UnitState.FAILED and r.attempts == 2 and "s_20240601" in r.error for r in halves)
        assert {r.state for r in ledger.rows() if r.scene_index != 1} == {UnitState.DONE}
        bad_chips = sum(r.chips for r in top)
    out = aggregate(tmp_path / "run.ledger", tmp_path / "fleet.gpkg")
    assert out.status == "partial" and out.failed_chips == bad_chips
    chips, dets = records(tmp_path / "fleet.gpkg")
    assert {c[4] for c in chips if c[0] == "s_20240601"} == {"failed"}
    assert len([c for c in chips if c[0] == "s_20240601"]) == bad_chips
    good_chips = [c for c in chips if c[0] != "s_20240601"]
    ref_chips, ref_dets = records(ref)
    assert [c[:5] for c in good_chips] == [c[:5] for c in ref_chips]
    assert [d[:4] for d in dets] == [d[:4] for d in ref_dets]
