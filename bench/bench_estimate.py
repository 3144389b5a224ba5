#!/usr/bin/env python3
"""How close is ``groundbreak plan``'s time estimate to the run it predicts?

On the demo world: ``plan --json`` then ``run`` (a fresh output each time, one cache folder for all),
``--repeats`` times. The first plan has nothing measured on this machine yet (the default guess);
every later plan is calibrated by the previous run (its end-to-end rate over inferred chips and its
model-load time, remembered in the cache). Prints estimate, actual wall time and their ratio.

    $ .venv/bin/python bench/bench_estimate.py --repeats 3
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7, help="demo world seed")
    args = ap.parse_args()
    from groundbreak.world import demo_spec, generate_world

    work = Path(tempfile.mkdtemp(prefix="gb-estimate-"))
    env = dict(os.environ, GROUNDBREAK_CACHE=str(work / "cache"))
    world = generate_world(work / "world", demo_spec(args.seed))
    inputs = ["--aoi", str(world.aoi), "--scenes", *[str(p) for p in world.scene_paths]]
    gb = [sys.executable, "-m", "groundbreak", "-q"]
    print("%-4s %-22s %10s %10s %8s" % ("run", "estimate from", "estimate", "actual", "ratio"))
    for i in range(args.repeats):
        plan = subprocess.run(gb + ["plan", *inputs, "--json"], env=env, capture_output=True, text=True, check=True)
        est = json.loads(plan.stdout)
        t0 = time.perf_counter()
        done = subprocess.run(gb + ["run", *inputs, "--out", str(work / ("out%d.gpkg" % i)), "--events", "jsonl"],
                              env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        result = [json.loads(line) for line in done.stdout.splitlines() if '"type":"result"' in line][-1]
        st = result["stats"]
        tl = (st.get("timeline") or {}).get("seconds")
        print("%-4d %-22s %9.1fs %9.1fs %8.2f   (run: start-up %.2f s, model load %.2f s, inferred %d in %.1f s, "
              "timeline %s)" % (i + 1, est["throughput_source"], est["expected_seconds"], wall,
                                est["expected_seconds"] / wall, st["timings"].get("startup_s", 0.0),
                                st["timings"].get("model_load_s", 0.0), st["chips_inferred"], st["seconds"],
                                "%.1f s" % tl if tl is not None else "-"))
    print("(actual = the whole `groundbreak run` process, start-up included; goal: ratio within 0.7-1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
