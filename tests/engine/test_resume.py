"""Kill -9 in the middle of a run, run the same command again: the output equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyogrio
import pytest
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

X0, Y1 = ORIGIN
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
DATES = ("20240501", "20240601", "20240701")
CHIPS = 16 * len(DATES)


def _command(folder: Path, model: Path, out: Path, *extra: str):
    return [sys.executable, "-m", "groundbreak", "-q", "run", "--aoi", str(folder / "aoi.geojson"),
            "--scenes", str(folder / "s_*.tif"), "--model", str(model), "--out", str(out),
            "--runtime", "eager", "--threads", "1", *extra]


def _records(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        chips = sorted(conn.execute(
            "SELECT scene_id, chip_id, aoi_id, date, status, round(valid_fraction, 5), screened_by, score FROM chips"))
        dets = sorted(conn.execute("SELECT scene_id, chip_id, aoi_id, date, score, label, model_id FROM detections"))
        attempts = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        conn.close()
    return chips, dets, attempts


def _count(path: Path) -> int:
    if not path.exists():  # sqlite3.connect would create an empty file the engine then refuses
        return 0
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # the layers are being created


def _same(a, b, score_index: int) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:score_index] == y[:score_index] and x[score_index + 1:] == y[score_index + 1:]
        if x[score_index] is None or y[score_index] is None:
            assert x[score_index] is None and y[score_index] is None
        else:
            assert abs(x[score_index] - y[score_index]) < 1e-5


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_model):
    for i, day in enumerate(DATES):
        # A cloudy corner on one date so drops are part of the ledger too.
        write_scene(tmp_path / ("s_%s.tif" % day), size=(1024, 1024), seed=i,
                    cloud_box=(0, 256, 768, 1024) if i == 1 else None)
    write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 2038, X0 + 2038, Y1 - 10)], ids=["site"])

    reference = tmp_path / "reference.gpkg"
    done = subprocess.run(_command(tmp_path, tiny_model, reference), env=ENV, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "out.gpkg"
    # Batches of one chip and one thread: slow enough to be killed between commits.
    cmd = _command(tmp_path, tiny_model, out, "--batch-size", "1")
    proc = subprocess.Popen(cmd, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _count(out) < 4:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _count(out)
    assert 4 <= killed_at < CHIPS, "kill came too late to test anything"
    # The killed run left a GeoPackage GDAL reads.
    meta, _, geoms, _ = pyogrio.raw.read(str(out), layer="chips")
    assert len(geoms) == killed_at

    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr

    chips, dets, attempts = _records(out)
    ref_chips, ref_dets, _ = _records(reference)
    assert len(chips) == CHIPS
    assert len({(c[0], c[1]) for c in chips}) == CHIPS  # no duplicates
    _same(chips, ref_chips, score_index=7)
    _same(dets, ref_dets, score_index=4)
    assert sum(c[4] == "dropped-cloud" for c in chips) >= 1
    # The killed attempt never finished; the second one did.
    assert attempts == ["running", "ok"]
