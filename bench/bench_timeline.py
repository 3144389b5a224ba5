#!/usr/bin/env python
"""Timeline benchmark (issue 8): sites from 10 million chip-date rows, time and peak memory.

    .venv/bin/python bench/bench_timeline.py [--chips 40000] [--dates 250] [--sites 400] [--mode both]

Builds a synthetic region: a square of ``--chips`` ground chips (512 m) observed on ``--dates``
dates (40,000 × 250 = 10 M chip-date rows, a few years of two-weekly revisits over ~10,000 km²),
~15% of rows dropped by clouds, a few percent never covered (no row), ``--sites`` construction
sites of 1-4 chips active for 5-60 revisits (some still going at the end), one-date false
alarms sprinkled over the background, and active 32 m cells for every detection.

  core  the library's array stages (collapse → hysteresis → merge → site series) on in-memory
        arrays: the algorithm alone, timed in this process;
  gpkg  ``build_timeline`` on a real run GeoPackage holding those rows (``chips`` rows written
        with SQL and NULL geometries to keep the file small; the timeline never reads chip
        geometries), in a child process so its peak RSS is its own.

Prints rows, sites found vs planted, seconds and peak memory; the goal on the 2-core machine is
under 60 s and under 1 GB. Not a test: timings on a shared machine are noise-prone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))


def synthesize(n_chips: int, n_dates: int, n_sites: int, seed: int = 0):
    """(col, row, date, score-or-NaN-for-cloud) rows and the planted sites."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_chips)))
    chip = np.arange(n_chips)
    cols, rows = 900 + chip % side, 10000 + chip // side
    score = rng.beta(1.2, 30.0, size=(n_chips, n_dates)).astype(np.float32)  # background, mostly < 0.1
    blips = rng.random((n_chips, n_dates)) < 0.002
    score[blips] = rng.uniform(0.75, 1.0, int(blips.sum()))
    planted = []
    centres = rng.choice(n_chips, n_sites, replace=False)
    for c in centres:
        members = [c] + [c + d for d in (1, side, side + 1)[: int(rng.integers(0, 4))] if c + d < n_chips]
        start = int(rng.integers(1, n_dates - 5))
        length = int(rng.integers(5, 60))
        end = min(n_dates, start + length)
        for m in members:
            score[m, start:end] = rng.uniform(0.8, 1.0, end - start)
        planted.append((start, end))
    cloud = rng.random((n_chips, n_dates)) < 0.15
    score[cloud] = np.nan
    covered = rng.random((n_chips, n_dates)) > 0.02
    ci, di = np.nonzero(covered)
    return cols, rows, ci, di.astype(np.int32), score[ci, di], planted


def run_core(args) -> dict:
    from groundbreak.timeline import (
        TimelineParams,
        chip_intervals,
        collapse_rows,
        group_intervals,
        site_arrays,
    )

    cols, rows, ci, di, sc, planted = synthesize(args.chips, args.dates, args.sites)
    known = ~np.isnan(sc)
    params = TimelineParams(enter=0.72, exit=0.52)
    t0, c0 = time.perf_counter(), time.process_time()
    chip, date, score = collapse_rows(ci[known], di[known], sc[known], args.dates)
    iv = chip_intervals(chip, date, score, args.dates, params)
    label = group_intervals(cols, rows, iv, args.dates)
    arrays = site_arrays(chip, date, score, iv, label, args.dates, params)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": "core", "cpu_s": round(cpu, 2), "rows": int(ci.size), "rows_inferred": int(known.sum()),
            "intervals": len(iv),
            "sites": int(arrays.start.size), "planted_sites": len(planted), "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "note": "peak RSS includes generating the 10M synthetic rows in this process"}


def write_gpkg(path: Path, args) -> int:
    import shapely

    from groundbreak.grid import ChipGrid
    from groundbreak.store import DetectionStore, gpkg_blob
    from groundbreak.timeline import _connect

    grid = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
    cols, rows, ci, di, sc, _ = synthesize(args.chips, args.dates, args.sites)
    base = np.datetime64("2019-01-01")
    dates = [str(base + np.timedelta64(14 * k, "D")) for k in range(args.dates)]
    chip_ids = np.array([grid.chip_id(int(c), int(r)) for c, r in zip(cols, rows)], dtype=object)
    store = DetectionStore(path, epsg=grid.epsg)
    store.start_attempt(run_id="bench", fingerprint="bench", started="2024-01-01T00:00:00+00:00", row={
        "model_id": "bench", "model_sha256": "bench",
        "inputs": {"scenes": [{"scene_id": "s%04d" % k, "date": d} for k, d in enumerate(dates)]}})
    store.close()
    conn = _connect(path)  # registers the SQL functions GDAL's R-tree triggers call
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    step = 500_000
    for i in range(0, ci.size, step):
        c, d, s = ci[i:i + step], di[i:i + step], sc[i:i + step]
        conn.executemany(
            "INSERT INTO chips (chip_id, aoi_id, scene_id, date, status, valid_fraction, screened_by, score, "
            "run_id, detail) VALUES (?, 'region', ?, ?, ?, 1.0, 'exact', ?, 'bench', '')",
            zip(chip_ids[c], ("s%04d" % k for k in d), (dates[k] for k in d),
                np.where(np.isnan(s), "dropped-cloud", "inferred"), [None if np.isnan(v) else float(v) for v in s]))
    hot = np.flatnonzero(sc >= 0.72)
    rows_act = []
    for k in hot:
        col, row = int(cols[ci[k]]), int(rows[ci[k]])
        # the whole chip active (the planted sites' chips touch, so their cells do too)
        cell = shapely.MultiPolygon([shapely.box(col * grid.size_m, row * grid.size_m,
                                                 (col + 1) * grid.size_m, (row + 1) * grid.size_m)])
        rows_act.append((gpkg_blob(shapely.to_wkb(cell), grid.epsg), chip_ids[ci[k]], "region",
                         "s%04d" % di[k], dates[di[k]], float(sc[k]), 64, cell.area, "bench", "bench"))
    conn.executemany("INSERT INTO activity (geom, chip_id, aoi_id, scene_id, date, score, cells, area_m2, model_id, "
                     "run_id) VALUES (?,?,?,?,?,?,?,?,?,?)", rows_act)
    conn.execute("COMMIT")
    conn.close()
    return int(ci.size)


def child(path: str) -> None:
    from groundbreak.timeline import TimelineParams, build_timeline

    t0, c0 = time.perf_counter(), time.process_time()
    r = build_timeline(Path(path), TimelineParams(enter=0.72, exit=0.52))
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
                      "sites": len(r.sites), **r.stats,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_gpkg(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="gb-bench-timeline-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "run.gpkg"
        t0 = time.perf_counter()
        n = write_gpkg(path, args) if not path.exists() else -1  # --keep: reuse the file written before
        written = time.perf_counter() - t0
        proc = subprocess.run([sys.executable, __file__, "--child", str(path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "engine")), check=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        size_mb = path.stat().st_size / 2**20
    return {"mode": "gpkg", "rows": n if n >= 0 else out["rows"], "planted_sites": args.sites,
            "gpkg_mb": round(size_mb), "write_s": round(written, 1), **out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=40_000)
    ap.add_argument("--dates", type=int, default=250)
    ap.add_argument("--sites", type=int, default=400)
    ap.add_argument("--mode", choices=["core", "gpkg", "both"], default="both")
    ap.add_argument("--keep", default=None, metavar="GPKG",
                    help="write the run GeoPackage here and keep it (reused when it exists)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    results = []
    if args.mode in ("core", "both"):
        results.append(run_core(args))
        print(json.dumps(results[-1]), flush=True)
    if args.mode in ("gpkg", "both"):
        results.append(run_gpkg(args))
        print(json.dumps(results[-1]), flush=True)
    for r in results:
        print("%-4s  %10d rows  %5d sites (%d planted)  %6.1f s wall, %6.1f s CPU  peak %6.0f MB" % (
            r["mode"], r["rows"], r["sites"], r["planted_sites"], r["seconds"], r.get("cpu_s", float("nan")),
            r["peak_rss_mb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
