"""SIGKILL the runner (`groundbreak fleet run --local 2`) mid-run, run it again: the ledger survives and the
merged output equals an undisturbed run's, with no duplicates."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
from fleet_world import records, with_threshold, write_world

from groundbreak.fleet import Ledger, UnitState, aggregate, plan_fleet
from groundbreak.fleet.parts import SUFFIX, decode_part
from groundbreak.model import load_model_package
from groundbreak.pipeline import RunOptions, run_detection
from groundbreak.plan import plan_inputs

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def _done(ledger) -> int:
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM units WHERE state='done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the runner, then the cluster processes it started (they would linger as orphans)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)


def test_the_ledger_survives_a_sigkill_of_the_runner(tmp_path, tiny_model):
    model = load_model_package(with_threshold(tiny_model, tmp_path / "m", 0.4))
    aoi, scenes = write_world(tmp_path)
    options = RunOptions(runtime="eager", threads=1, readers=1, batch_size=1)
    reference = tmp_path / "reference.gpkg"
    assert run_detection(plan_inputs([str(aoi)], [str(s) for s in scenes], model), model, reference,
                         options=options).status == "ok"
    ledger = tmp_path / "run.ledger"
    planned = plan_fleet([str(aoi)], [str(s) for s in scenes], model, ledger, options=options, unit_chips=2)
    env = dict(os.environ, GROUNDBREAK_PIN_CORES="0")
    cmd = [sys.executable, "-m", "groundbreak", "-q", "fleet", "run", "--ledger", str(ledger), "--local", "2",
           "--dashboard", ":0"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _done(ledger) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        _kill_tree(proc)
    with Ledger(ledger, readonly=True) as led:
        states = led.state_counts()
        assert 2 <= states["done"]["units"] < planned.units, "the kill came too late to test anything"
        assert led.runner_attempts()[-1]["status"] == "running"  # killed: never finished
    conn = sqlite3.connect(str(ledger))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    # The part folder holds no half-written part: every part file reads back complete.
    for path in (tmp_path / "run.parts").glob("*" + SUFFIX):
        raw = path.read_bytes()
        unit_id = json.loads(gzip.decompress(raw))["unit_id"]
        assert decode_part(raw, where=str(path), run_id=planned.run_id, unit_id=unit_id).chips
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-3000:]
    with Ledger(ledger, readonly=True) as led:
        assert {r.state for r in led.rows()} == {UnitState.DONE}
        assert [a["status"] for a in led.runner_attempts()] == ["running", "ok"]
    out = aggregate(ledger, tmp_path / "fleet.gpkg")
    assert out.status == "ok"
    chips, dets = records(tmp_path / "fleet.gpkg")
    ref_chips, ref_dets = records(reference)
    assert len(chips) == planned.chips == len({(c[0], c[1]) for c in chips})
    assert [c[:5] for c in chips] == [c[:5] for c in ref_chips]
    assert [d[:4] for d in dets] == [d[:4] for d in ref_dets]
    assert all(abs(a[4] - b[4]) < 1e-5 for a, b in zip(dets, ref_dets))
