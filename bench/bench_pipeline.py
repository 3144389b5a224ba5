#!/usr/bin/env python
"""Pipeline benchmark (issue 2): naive loop vs model-only vs ``groundbreak run``, in one run.

    .venv/bin/python bench/bench_pipeline.py [--size 10240] [--naive-chips 120] [--runtime auto]

On a generated scene (>= 10,240² px, 4-band uint16, 256-tiled DEFLATE, ~35% under cloud in a
sidecar mask) it measures, side by side:

  (a) the naive loop: per chip window read, preprocess, model on a batch of one, no mask
      (eager fp32, like the inherited research code), on a sample of chips;
  (b) model-only throughput on in-memory batches (the run's runtime and batch size), and the
      pipeline reader's per-chip read cost, each alone;
  (c) ``groundbreak run`` as a subprocess on the whole scene, and on a quarter of it to show that
      peak memory does not grow with AOI size.

Chips/s for (a) and (c) are *scene chips* (planned chips covered per second, the rate cost
follows); (c) also reports inferred chips/s, compared with 1/(t_read + t_infer) from (b).
Speed is never asserted in tests on this shared machine; this script prints figures instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10240, help="scene side in pixels (default 10240)")
    ap.add_argument("--naive-chips", type=int, default=120, help="chips timed in the naive loop (a sample)")
    ap.add_argument("--model-chips", type=int, default=256, help="chips timed in the model-only test")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="model package (default: the bundled model)")
    ap.add_argument("--work", default=None, help="cache folder for the generated scene")
    args = ap.parse_args()

    import rasterio
    import shapely
    import torch
    from rasterio.windows import Window

    from groundbreak.inference import Predictor
    from groundbreak.model import load_model_package
    from groundbreak.world import generate_large_scene

    work = Path(args.work or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "groundbreak" / "bench")
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    scene_path = generate_large_scene(work / ("large_%d_20240601.tif" % args.size), size=args.size)
    print("scene: %s (%.1f s to generate or reuse)" % (scene_path, time.perf_counter() - t))
    model = load_model_package(args.model)
    print("model: %s (%s, %s)" % (model.model_id, model.architecture, "DEMO weights" if model.demo else model.version))

    with rasterio.open(scene_path) as src:
        width, height, transform, crs = src.width, src.height, src.transform, src.crs
        n_chips = (width // 256) * (height // 256)
    with rasterio.open(scene_path.with_name(scene_path.stem + "_mask.tif")) as m:
        cloud = float((m.read(1, out_shape=(height // 8, width // 8)) > 0).mean())
    km2_per_chip = (256 * transform.a) ** 2 / 1e6
    print("scene: %d x %d px, %d chips of %.0f m, %.0f%% of pixels cloud/shadow in the sidecar"
          % (width, height, n_chips, 256 * transform.a, 100 * cloud))

    # (a) naive loop -------------------------------------------------------------------------
    torch.set_num_threads(args.threads)
    naive = Predictor(model, threads=args.threads, runtime="eager")
    rng = np.random.default_rng(0)
    per_row = width // 256
    sample = rng.choice(n_chips, size=min(args.naive_chips, n_chips), replace=False)
    t0 = time.perf_counter()
    with rasterio.open(scene_path) as src:
        for idx in sample:
            r, c = divmod(int(idx), per_row)
            chip = src.read([1, 2, 3, 4], window=Window(c * 256, r * 256, 256, 256))
            naive.predict(chip[None], "uint16")
    naive_s = (time.perf_counter() - t0) / len(sample)
    a_rate = 1.0 / naive_s
    del naive

    # (b) model only, and reader only --------------------------------------------------------
    pred = Predictor(model, threads=args.threads, runtime=args.runtime)
    raw = rng.integers(200, 4000, size=(args.batch_size, 4, 256, 256)).astype(np.uint16)
    pred.predict(raw, "uint16")  # warm-up
    n = 0
    t0 = time.perf_counter()
    while n < args.model_chips:
        pred.predict(raw, "uint16")
        n += args.batch_size
    t_infer = (time.perf_counter() - t0) / n
    runtime_name = pred.runtime
    del pred

    from groundbreak.grid import ChipGrid
    from groundbreak.scene import open_scene, select_bands
    from groundbreak.view import SceneView

    scene = open_scene(str(scene_path))
    grid = ChipGrid(epsg=crs.to_epsg(), chip_px=256, gsd=transform.a)
    view = SceneView(scene, grid, select_bands(scene, model.bands))
    col0 = int(round(transform.c / grid.size_m))
    row_top = int(round(transform.f / grid.size_m)) - 1
    cells = [(col0 + int(i) % per_row, row_top - int(i) // per_row) for i in sample]
    t0 = time.perf_counter()
    for c, r in cells:
        view.read_chip(c, r)
    t_read = (time.perf_counter() - t0) / len(cells)
    view.close()
    serial_bound = 1.0 / (t_read + t_infer)

    # (c) groundbreak run, full and quarter AOI ---------------------------------------------
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, frac in (("quarter", 0.5), ("full", 1.0)):
            left, top = transform.c, transform.f
            side_x, side_y = width * transform.a * frac, height * transform.a * frac
            aoi = Path(tmp) / ("aoi_%s.geojson" % name)
            poly = shapely.box(left + 1, top - side_y + 1, left + side_x - 1, top - 1)
            aoi.write_text(json.dumps({
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::%d" % crs.to_epsg()}},
                "features": [{"type": "Feature", "properties": {"aoi_id": name},
                              "geometry": shapely.geometry.mapping(poly)}]}))
            out = Path(tmp) / ("out_%s.gpkg" % name)
            cmd = [str(ROOT / ".venv" / "bin" / "groundbreak"), "-q", "run", "--aoi", str(aoi), "--scenes",
                   str(scene_path), "--out", str(out), "--runtime", args.runtime, "--batch-size",
                   str(args.batch_size), "--threads", str(args.threads), "--events", "jsonl"]
            if args.model:
                cmd += ["--model", args.model]
            out_file = Path(tmp) / ("events_%s.jsonl" % name)
            err_file = Path(tmp) / ("stderr_%s.txt" % name)
            with open(out_file, "w") as fo, open(err_file, "w") as fe:
                proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
                # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would mix runs).
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                print(err_file.read_text()[-3000:])
                return 1
            lines = out_file.read_text().splitlines()
            result = [json.loads(l) for l in lines if '"type":"result"' in l][0]
            runs[name] = (result["stats"], result["cost"], usage.ru_maxrss / 1024.0, None)

    s, cost, peak_mb, _ = runs["full"]
    load = s["timings"].get("model_load_s", 0.0)
    c_rate = s["chips_planned"] / s["seconds"]
    c_rate_steady = s["chips_planned"] / max(1e-9, s["seconds"] - load)
    c_inferred_steady = s["chips_inferred"] / max(1e-9, s["seconds"] - load)
    dropped = s["chips_dropped"]
    q, _, q_peak, _ = runs["quarter"]

    rows = [
        ("(a) naive loop (read + eager fp32, batch 1, no mask)", a_rate, a_rate * km2_per_chip * 3600, None),
        ("(b) model only (%s, batch %d)" % (runtime_name, args.batch_size), 1.0 / t_infer, None, None),
        ("(b) reader only (pipeline read + exact mask)", 1.0 / t_read, None, None),
        ("    serial bound 1/(t_read + t_infer)", serial_bound, None, None),
        ("(c) groundbreak run, scene chips/s incl. model load", c_rate, s["km2_per_h"], peak_mb),
        ("(c) groundbreak run, scene chips/s after model load", c_rate_steady, c_rate_steady * km2_per_chip * 3600, None),
        ("(c) groundbreak run, inferred chips/s after model load", c_inferred_steady, None, None),
        ("(c) quarter-area run (peak memory check)", q["chips_planned"] / q["seconds"], q["km2_per_h"], q_peak),
    ]
    print()
    print("%-58s %10s %12s %12s" % ("measurement", "chips/s", "km²/h", "peak RSS MB"))
    for label, rate, kmh, rss in rows:
        print("%-58s %10.1f %12s %12s" % (label, rate, "" if kmh is None else "%.0f" % kmh,
                                            "" if rss is None else "%.0f" % rss))
    print()
    print("full run: %d planned, dropped %s (%.0f%%), %d inferred, %.1f s wall (model load %.1f s), "
          "%.1f CPU-s, runtime %s" % (s["chips_planned"], dropped, 100 * sum(dropped.values()) / s["chips_planned"],
                                      s["chips_inferred"], s["seconds"], load, s["cpu_seconds"], s["runtime"]))
    print("cost: $%.5f per run, $%.7f per km² at $%.3f/h (example price)"
          % (cost["run_usd"], cost["per_km2_usd"] or 0, cost["price_per_hour"]))
    print()
    print("ratio (c)/(a)  scene chips/s, incl. model load  : %5.2f   (target >= 10)" % (c_rate / a_rate))
    print("ratio (c)/(a)  scene chips/s, after model load  : %5.2f" % (c_rate_steady / a_rate))
    print("ratio (c)/(b)  inferred chips/s / model-only    : %5.2f" % (c_inferred_steady * t_infer))
    print("ratio (c) / serial bound 1/(t_read+t_infer)     : %5.2f   (target >= 0.9)" % (c_inferred_steady / serial_bound))
    print("peak RSS quarter vs full area                   : %.0f MB vs %.0f MB (%.2fx for 4x the area)"
          % (q_peak, peak_mb, peak_mb / max(q_peak, 1e-9)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
