"""The fleet's pieces without a cluster: units, parts, the ledger's recovery, retry, aggregation, the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_world import corrupt_tile, records, with_threshold, write_world

from groundbreak.errors import CorruptFileError, UsageError
from groundbreak.fleet import (
    InProcessExecutor,
    Ledger,
    RetryPolicy,
    UnitState,
    aggregate,
    cost_report,
    fleet_status,
    pack_units,
    plan_fleet,
    retry_failed,
    run_fleet,
)
from groundbreak.fleet.costing import InstanceModel
from groundbreak.fleet.ledger import RunnerLock
from groundbreak.fleet.parts import PartStore, part_name
from groundbreak.fleet.runner import failure_signature, job_for
from groundbreak.fleet.work import split_unit
from groundbreak.fleet.worker import run_job
from groundbreak.model import load_model_package
from groundbreak.pipeline import RunOptions, run_detection
from groundbreak.plan import plan_inputs

OPTIONS = RunOptions(runtime="eager", threads=1, readers=1)


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    return load_model_package(with_threshold(tiny_model, tmp_path_factory.mktemp("model") / "m", 0.4))


@pytest.fixture()
def world(tmp_path):
    return write_world(tmp_path)


def test_units_cover_every_chip_once_and_stay_within_one_scene(tmp_path, world, model):
    aoi, scenes = world
    plan = plan_inputs([str(aoi)], [str(s) for s in scenes], model)
    for size in (1, 3, 1024):
        units = pack_units(plan, size)
        assert units == pack_units(plan, size)  # deterministic, ids included
        assert all(u.chips <= size for u in units)
        keys = [(u.scene_index, ref.chip_id) for u in units for _, ref in u.refs()]
        assert sorted(keys) == sorted((wu.scene_index, c.chip_id) for wu in plan.units for c in wu.chips)
        assert len(set(keys)) == len(keys)
        assert len({u.unit_id for u in units}) == len(units)
    # The 100 m site inside AOI a adds no chip: overlapping AOIs share chips.
    refs = [ref for u in pack_units(plan, 1024) for _, ref in u.refs()]
    assert any(ref.aoi_ids == ("a", "site") for ref in refs)
    halves = split_unit(pack_units(plan, 1024)[0])
    assert [h.unit_id.rsplit("~", 1)[1] for h in halves] == ["0", "1"]
    assert sum(h.chips for h in halves) == pack_units(plan, 1024)[0].chips


def test_a_part_is_complete_or_absent_and_only_its_units(tmp_path, world, model):
    aoi, scenes = world
    planned = plan_fleet([str(aoi)], [str(s) for s in scenes], model, tmp_path / "run.ledger", options=OPTIONS,
                         unit_chips=4)
    with Ledger(tmp_path / "run.ledger") as ledger:
        row = ledger.rows()[0]
        unit_job = job_for(ledger, row.unit_id)
    parts = PartStore(planned.parts)
    parts.prepare()
    summary = run_job(unit_job)
    name = part_name(planned.run_id, row.unit_id)
    assert summary["part"] == name and summary["chips"] == row.chips
    assert [p.name for p in Path(planned.parts).iterdir()] == [name]  # no temporary file left behind
    part = parts.read(name, run_id=planned.run_id, unit_id=row.unit_id)
    assert len(part.chips) == row.chips
    with pytest.raises(CorruptFileError):
        parts.read(name, run_id=planned.run_id, unit_id="another-unit")
    raw = Path(parts.path(name)).read_bytes()
    Path(parts.path(name)).write_bytes(raw[: len(raw) // 2])
    assert parts.find(name, run_id=planned.run_id, unit_id=row.unit_id) is None


def test_a_restarted_runner_adopts_complete_parts_and_requeues_the_rest(tmp_path, world, model):
    aoi, scenes = world
    ledger_path = tmp_path / "run.ledger"
    planned = plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS, unit_chips=4)
    with Ledger(ledger_path) as ledger:
        first, second = ledger.rows()[:2]
        # A runner died with two units submitted: one worker had written its part, one had not.
        PartStore(ledger.spec.parts).prepare()
        run_job(job_for(ledger, first.unit_id))
        ledger.mark_running(first.unit_id)
        ledger.mark_running(second.unit_id)
    result = run_fleet(ledger_path, InProcessExecutor(threads=1))
    assert result.status == "ok" and result.chips_this_run == planned.chips - first.chips
    with Ledger(ledger_path, readonly=True) as ledger:
        assert ledger.row(first.unit_id).state is UnitState.DONE
        assert [a["runner_attempt"] for a in ledger.unit_attempts(first.unit_id)] == [None]  # adopted
        assert [a["outcome"] for a in ledger.unit_attempts(second.unit_id)] == ["done"]
    reference = tmp_path / "reference.gpkg"
    run_detection(plan_inputs([str(aoi)], [str(s) for s in scenes], model), model, reference, options=OPTIONS)
    aggregate(ledger_path, tmp_path / "fleet.gpkg")
    assert [c[:5] for c in records(tmp_path / "fleet.gpkg")[0]] == [c[:5] for c in records(reference)[0]]


def test_one_runner_per_ledger_and_no_merge_of_an_unfinished_run(tmp_path, world, model):
    aoi, scenes = world
    ledger_path = tmp_path / "run.ledger"
    plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS)
    with pytest.raises(UsageError, match="already exists"):
        plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS)
    with RunnerLock(ledger_path):
        assert fleet_status(ledger_path).runner_active
        with pytest.raises(UsageError, match="in use"):
            run_fleet(ledger_path, InProcessExecutor())
    assert not fleet_status(ledger_path).runner_active
    with pytest.raises(UsageError, match="not finished"):
        aggregate(ledger_path, tmp_path / "out.gpkg")
    partial = aggregate(ledger_path, tmp_path / "out.gpkg", allow_partial=True)
    assert partial.status == "partial" and partial.chips == 0


def test_retry_redoes_failed_chips_and_their_new_records_replace_the_old(tmp_path, world, model):
    aoi, scenes = world
    original = scenes[0].read_bytes()
    corrupt_tile(scenes[0], 1, 1)
    ledger_path = tmp_path / "run.ledger"
    plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS, unit_chips=4)
    first = run_fleet(ledger_path, InProcessExecutor(threads=1))
    assert first.status == "partial" and first.failed_chips == 1
    assert retry_failed(ledger_path).retry_chips == 1
    assert retry_failed(ledger_path).retry_units == 0  # the retry unit already carries that chip
    scenes[0].write_bytes(original)  # repaired
    again = run_fleet(ledger_path, InProcessExecutor(threads=1))
    assert again.status == "ok" and again.chips_this_run == 1
    reference = tmp_path / "reference.gpkg"
    run_detection(plan_inputs([str(aoi)], [str(s) for s in scenes], model), model, reference, options=OPTIONS)
    out = aggregate(ledger_path, tmp_path / "fleet.gpkg")
    assert out.status == "ok" and out.failed_chips == 0
    chips, dets = records(tmp_path / "fleet.gpkg")
    ref_chips, ref_dets = records(reference)
    assert [c[:5] for c in chips] == [c[:5] for c in ref_chips]
    assert [d[:4] for d in dets] == [d[:4] for d in ref_dets]


def test_failures_compare_without_unit_or_worker():
    a = "exception: unit s@1_2~0 failed on host:10: CorruptFileError: cannot open /x/s.tif"
    b = "exception: unit s@1_2~1 failed on host:11: CorruptFileError: cannot open /x/s.tif"
    assert failure_signature(a) == failure_signature(b)
    assert failure_signature(a) != failure_signature(a.replace("cannot open", "cannot read"))
    assert failure_signature("worker_lost: KilledWorker: key-a") == failure_signature("worker_lost: other")


def test_cost_follows_chips_and_one_instance_per_aoi_costs_more(tmp_path, world, model):
    aoi, scenes = world
    ledger_path = tmp_path / "run.ledger"
    planned = plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS)
    with Ledger(ledger_path, readonly=True) as ledger:
        expected = cost_report(ledger)
    assert not expected.measured
    assert sum(a.share for a in planned.aois) == pytest.approx(planned.chips)
    run_fleet(ledger_path, InProcessExecutor(threads=1))
    with Ledger(ledger_path, readonly=True) as ledger:
        measured = cost_report(ledger, instance=InstanceModel(startup_s=180, min_billing_s=60))
        hourly = cost_report(ledger, instance=InstanceModel(startup_s=180, min_billing_s=3600,
                                                            billing_increment_s=3600))
    assert measured.measured and measured.total_usd > 0
    assert sum(a.shared_usd for a in measured.aois) == pytest.approx(measured.total_usd)
    by_id = {a.aoi_id: a for a in measured.aois}
    assert by_id["site"].shared_usd < by_id["a"].shared_usd  # cost follows chips, not AOI count
    # Four AOIs, each paying start-up and minimum billing, cost far more than the shared queue.
    # Per-second billing: start-up (180 s, over the 60 s minimum) plus a second or so of chips each.
    assert measured.instance_total_usd == pytest.approx(4 * 180 / 3600 * 0.1, rel=0.05)
    assert hourly.instance_total_usd == pytest.approx(4 * 0.1)
    assert measured.instance_ratio > 10


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundbreak", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_the_cli_plans_runs_watches_and_merges(tmp_path, world, model):
    aoi, scenes = world
    m = str(model.root)
    planned = _cli("fleet", "plan", "--aois", str(aoi), "--scenes", *[str(s) for s in scenes], "--model", m,
                   "--ledger", "run.ledger", "--threads", "1", "--runtime", "eager", "--unit-chips", "6", "--json",
                   cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert doc["chips_planned"] == 24 and {a["aoi_id"] for a in doc["aois"]} == {"a", "b", "c", "site"}
    none = _cli("fleet", "run", "--ledger", "run.ledger", cwd=tmp_path)
    assert none.returncode == 2 and "exactly one of" in none.stderr
    ran = _cli("fleet", "run", "--ledger", "run.ledger", "--processes", "2", "--events", "jsonl", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert events[-1] == {**events[-1], "type": "done", "status": "ok", "exit_code": 0}
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 24 and "eta_s" in progress[-1]
    status = json.loads(_cli("fleet", "status", "--ledger", "run.ledger", "--json", cwd=tmp_path).stdout)
    assert status["units"]["done"] == doc["units"] and status["chips_done"] == 24
    cost = _cli("fleet", "cost", "--ledger", "run.ledger", "--csv", "cost.csv", cwd=tmp_path)
    assert cost.returncode == 0 and "one instance" in cost.stdout
    assert len((tmp_path / "cost.csv").read_text().splitlines()) == 5
    merged = _cli("fleet", "aggregate", "--ledger", "run.ledger", "--out", "out.gpkg", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    conn = sqlite3.connect(str(tmp_path / "out.gpkg"))
    try:
        layers = {r[0] for r in conn.execute("SELECT table_name FROM gpkg_contents")}
    finally:
        conn.close()
    assert {"detections", "activity", "chips", "runs"} <= layers
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = _cli("fleet", "aggregate", "--ledger", "run.ledger", "--out", "out.parquet", "--format", "parquet",
                   cwd=tmp_path)
    assert parquet.returncode == 0, parquet.stderr
    chips, dets = records(tmp_path / "out.gpkg")
    assert pq.read_table(tmp_path / "out.parquet" / "chips.parquet").num_rows == len(chips)
    table = pq.read_table(tmp_path / "out.parquet" / "detections.parquet")
    assert table.num_rows == len(dets)
    assert json.loads(table.schema.metadata[b"geo"])["primary_column"] == "geometry"


def test_a_failing_unit_is_retried_with_backoff_then_split(tmp_path, world, model):
    aoi, scenes = world
    ledger_path = tmp_path / "run.ledger"
    plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger_path, options=OPTIONS, unit_chips=8)
    scenes[2].unlink()  # gone after planning
    policy = RetryPolicy(max_attempts=2, backoff_s=0.05)
    assert policy.delay(1, "u") == policy.delay(1, "u") and policy.delay(2, "u") == pytest.approx(
        2 * policy.delay(1, "u"))
    result = run_fleet(ledger_path, InProcessExecutor(threads=1), policy=policy)
    assert result.status == "partial"
    with Ledger(ledger_path, readonly=True) as ledger:
        gone = [r for r in ledger.rows() if r.scene_index == 2]
        assert {r.state for r in gone if r.parent is None} == {UnitState.SPLIT}
        assert {r.state for r in gone if r.parent is not None} == {UnitState.FAILED}
        attempts = ledger.unit_attempts(gone[0].unit_id)
        assert [a["outcome"] for a in attempts] == ["failed", "failed"]
        assert attempts[1]["submitted"] - attempts[0]["finished"] >= 0.05 * 0.75 - 1e-3  # waited its backoff
