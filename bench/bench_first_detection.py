#!/usr/bin/env python
"""Time to the first detection of a small run, as the QGIS plugin starts it (issue 10's "a small
plugin run shows its first detection in under 3 s with a warm cache").

    .venv/bin/python bench/bench_first_detection.py            # median of 5, warm cache

The plugin starts ``groundbreak run --events jsonl`` and draws each ``features`` event as it
arrives; this script starts the same command on a small AOI (about 1 km² around one construction
site of the 4-date demo world 7, all its dates) and measures, from process start, when the first
``features`` event and the ``result`` event arrive on stdout. The first run fills the compiled-model
cache (cold); the next ``--repeat`` runs are warm. The plugin's own cost (reading the line, adding
the feature to a memory layer) is measured separately in tests/plugin/bench_streaming.py.
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
from typing import Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
GROUNDBREAK = ROOT / ".venv" / "bin" / "groundbreak"


def small_aoi(world, out: Path, half_m: float = 500.0) -> Path:
    """A square AOI of 2 × ``half_m`` around the first construction site of the world."""
    site = next(s for s in world.sites if s.kind == "construction")
    x, y = site.centroid
    ring = [[x - half_m, y - half_m], [x + half_m, y - half_m], [x + half_m, y + half_m], [x - half_m, y + half_m],
            [x - half_m, y - half_m]]
    out.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": world.crs}},
        "features": [{"type": "Feature", "properties": {"aoi_id": site.site_id},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return out


def timed_run(aoi: Path, scenes, out: Path, cache: Path) -> Tuple[Optional[float], float, dict]:
    """(seconds to the first features event or None, seconds to the result event, result stats)."""
    cmd = [str(GROUNDBREAK), "run", "--aoi", str(aoi), "--scenes", *map(str, scenes), "--out", str(out),
           "--events", "jsonl", "--overwrite", "--no-timeline"]
    env = dict(os.environ, GROUNDBREAK_CACHE=str(cache))
    t0 = time.perf_counter()
    first: Optional[float] = None
    done, stats = float("nan"), {}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE, env=env,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("type") == "features" and first is None and event.get("features"):
                first = time.perf_counter() - t0
            elif event.get("type") == "result":
                done, stats = time.perf_counter() - t0, event.get("stats", {})
    if proc.returncode != 0:
        sys.exit("groundbreak run failed (exit %d): %s" % (proc.returncode, " ".join(cmd)))
    return first, done, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from groundbreak.demo import default_world_dir
    from groundbreak.world import demo_spec, generate_world

    world = generate_world(default_world_dir(7), demo_spec(7))
    with tempfile.TemporaryDirectory(prefix="gb-first-") as tmp_name:
        tmp = Path(tmp_name)
        aoi = small_aoi(world, tmp / "aoi.geojson")
        cache = tmp / "cache"
        cold = timed_run(aoi, world.scene_paths, tmp / "cold.gpkg", cache)
        warm = [timed_run(aoi, world.scene_paths, tmp / "warm.gpkg", cache) for _ in range(args.repeat)]
    st = warm[-1][2]
    print("small AOI: %s km², %d chips planned over %d dates, %d inferred, %d detections; runtime %s; load average %s"
          % (st.get("aoi_km2"), st.get("chips_planned", 0), len(world.scenes), st.get("chips_inferred", 0),
             st.get("detections", 0), st.get("runtime"), os.getloadavg()))
    firsts = [w[0] for w in warm if w[0] is not None]
    print("%-44s %8s %8s" % ("whole process, from start", "cold", "warm (median of %d)" % args.repeat))
    print("%-44s %8s %8s" % ("first detection on stdout (s)", "%.2f" % cold[0] if cold[0] else "none",
                             "%.2f" % statistics.median(firsts) if firsts else "none"))
    print("%-44s %8.2f %8.2f" % ("run finished (s)", cold[1], statistics.median(w[1] for w in warm)))
    if firsts:
        print("warm first detection within 3 s: %s" % ("yes" if statistics.median(firsts) < 3.0 else "NO"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
