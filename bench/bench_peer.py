#!/usr/bin/env python
"""Peer comparison (issue 10): ``groundbreak run`` against a plain runtime loop and the Deepness
QGIS plugin's processor, whole process, on the same 2 m uint16 scene with masking off.

    .venv/bin/python bench/bench_peer.py            # 256 and 1,024 chips, median of 3

For each job size (a generated 4-band uint16 scene of 16 × 16 or 32 × 32 chips of 256 px) it times,
as whole processes (Python start-up, imports, model load, reads, inference), median of ``--repeat``:

  groundbreak   ``groundbreak run --min-valid 0`` with the default model (``auto`` runtime: its
                validated int8 IR), warm compiled-model cache, writing its GeoPackage;
  plain loop    a script that does only the work: rasterio windowed reads of every chip, the
                package's own input scaling, OpenVINO on the same IR, batch 32, nothing written.

Deepness is not a dependency and does not run here (it is a QGIS plugin from plugins.qgis.org, which
this network cannot reach): its figures are the ones recorded in the issue from a documented run on
this machine type with the same model exported to ONNX (ONNX Runtime, batch 32): 5.0 s for 256 chips
and 15.2 s for 1,024. Per-extra-chip rates are (n2 − n1) / (t2 − t1): start-up cancels out.
Figures print; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ROOT, groundbreak_run  # noqa: E402  (one home for running groundbreak)

#: Deepness QGIS plugin, same model as ONNX, ONNX Runtime batch 32, whole process (recorded in issue 10).
DEEPNESS_S = {256: 5.0, 1024: 15.2}

PLAIN_LOOP = r"""
import sys, time
import numpy as np, rasterio, openvino as ov
from rasterio.windows import Window
from groundbreak.model import load_model_package
scene, model_dir, xml, threads, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
pkg = load_model_package(model_dir)
a, b = pkg.affine("uint16")
net = ov.Core().compile_model(xml, "CPU", {"INFERENCE_NUM_THREADS": threads})
n = 0
with rasterio.open(scene) as src:
    wins = [Window(c * 256, r * 256, 256, 256) for r in range(src.height // 256) for c in range(src.width // 256)]
    for i in range(0, len(wins), batch):
        x = np.stack([src.read([1, 2, 3, 4], window=w) for w in wins[i:i + batch]]).astype(np.float32)
        x *= a[None, :, None, None]
        x += b[None, :, None, None]
        net(x)
        n += len(x)
print(n)
"""


def plain_loop(scene: Path, model_dir: Path, xml: Path, threads: int, batch: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PLAIN_LOOP, str(scene), str(model_dir), str(xml), str(threads), str(batch)],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--work", default=None, help="folder for the generated scenes (reused)")
    args = ap.parse_args()

    from groundbreak.model import default_model_path, load_model_package
    from groundbreak.world import generate_large_scene

    model_dir = default_model_path()
    model = load_model_package(model_dir)
    xml = model_dir / "openvino-int8.xml"
    work = Path(args.work or tempfile.gettempdir()) / "gb-bench-peer"
    work.mkdir(parents=True, exist_ok=True)
    print("model %s (DEMO weights: %s); cores %d; load average %s" % (model.model_id, model.demo,
                                                                    os.cpu_count() or 0, os.getloadavg()))
    rows: Dict[int, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gb-peer-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        for side in (16, 32):
            n = side * side
            scene = generate_large_scene(work / ("peer_%d_20240601.tif" % (side * 256)), size=side * 256)
            extra = ["--min-valid", "0", "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
            groundbreak_run(scene, model_dir, tmp, "warmup-%d" % n, 1.0, cache, extra)  # fills the compiled cache
            gb_runs = [groundbreak_run(scene, model_dir, tmp, "peer-%d" % n, 1.0, cache, extra)
                       for _ in range(args.repeat)]
            plain = [plain_loop(scene, model_dir, xml, args.threads, args.batch_size) for _ in range(args.repeat)]
            rows[n] = {"groundbreak": statistics.median(r.wall for r in gb_runs), "plain": statistics.median(plain),
                       "deepness": DEEPNESS_S[n]}
            stats = [r.stats for r in gb_runs]
            st = stats[-1]
            print("%5d chips: groundbreak planned %d, inferred %d, runtime %s, forward batch %d" % (
                n, st["chips_planned"], st["chips_inferred"], st["runtime"], st["forward_batch"]))
    print("\n%-34s %12s %12s %12s" % ("whole process, median of %d" % args.repeat, "256 chips", "1,024 chips",
                                      "per extra chip"))
    for key, label in (("groundbreak", "groundbreak run (s)"), ("plain", "plain OpenVINO loop (s)"),
                       ("deepness", "Deepness, recorded (s)")):
        t1, t2 = rows[256][key], rows[1024][key]
        print("%-34s %12.1f %12.1f %9.0f chips/s" % (label, t1, t2, 768 / max(1e-9, t2 - t1)))
    gb, plain, deep = ({n: rows[n][k] for n in rows} for k in ("groundbreak", "plain", "deepness"))
    steady = (768 / (gb[1024] - gb[256])) / (768 / (plain[1024] - plain[256]))
    print("peer time / groundbreak time, 256 chips                 : %5.2f  (goal > 1)" % (deep[256] / gb[256]))
    print("peer time / groundbreak time, 1,024 chips               : %5.2f  (goal >= 2)" % (deep[1024] / gb[1024]))
    print("groundbreak steady state / plain loop (per extra chip)  : %5.2f  (goal >= 0.9)" % steady)
    print(json.dumps({"rows": rows, "steady_ratio": round(steady, 3), "root": str(ROOT)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
