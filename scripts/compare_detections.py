#!/usr/bin/env python3
"""Compare the detections of two engine versions on the same inputs: the restructure check.

Runs ``groundbreak run`` from a git ref (checked out into a temporary worktree, run with this
repository's .venv and the ref's own code and default model) and from the working tree, on

  * the demo world (generated once, by the *ref's* world generator, so both runs read the same files),
  * the real NAIP series in $GROUNDBREAK_REAL_DATA/naip (skipped when the variable is unset),

and compares the sets of (scene, chip) detections and their scores. Exit 0 when they are the same
set with scores within --tolerance, 1 otherwise (the differences are printed).

    $ .venv/bin/python scripts/compare_detections.py --before b5aca21
    $ .venv/bin/python scripts/compare_detections.py --before main~5 --runtime eager --keep /tmp/cmp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"


def _env(engine_dir: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GROUNDBREAK_MODEL")}
    env["PYTHONPATH"] = str(engine_dir)  # before the editable install's path: that tree's code runs
    return env


def _run(engine_dir: Path, args: List[str], log: Path) -> None:
    cmd = [str(PY), "-m", "groundbreak", "-q", "run", *args]
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env=_env(engine_dir), stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc not in (0, 3):
        sys.exit("run failed (exit %d) with %s; see %s" % (rc, engine_dir, log))


def _supports(engine_dir: Path, option: str) -> bool:
    out = subprocess.run([str(PY), "-m", "groundbreak", "run", "--help"], env=_env(engine_dir),
                         capture_output=True, text=True).stdout
    return option in out


def _detections(gpkg: Path) -> Dict[Tuple[str, str], float]:
    conn = sqlite3.connect(str(gpkg))
    try:
        return {(s, c): float(v) for s, c, v in conn.execute("SELECT scene_id, chip_id, score FROM detections")}
    finally:
        conn.close()


def _chips(gpkg: Path) -> Dict[Tuple[str, str], Tuple[str, Optional[float]]]:
    conn = sqlite3.connect(str(gpkg))
    try:
        return {(s, c): (st, v) for s, c, st, v in conn.execute("SELECT scene_id, chip_id, status, score FROM chips")}
    finally:
        conn.close()


def _compare_chips(name: str, before: Dict, after: Dict, tolerance: float) -> bool:
    """Every planned chip must get the same status and (when inferred) the same score."""
    keys = set(before) | set(after)
    status_diff = [k for k in keys if before.get(k, ("?", None))[0] != after.get(k, ("?", None))[0]]
    worst = max((abs(before[k][1] - after[k][1]) for k in keys - set(status_diff)
                 if before[k][1] is not None and after[k][1] is not None), default=0.0)
    same = not status_diff and worst <= tolerance
    print("%-10s chips before %4d, after %4d; status differs on %d; max |dscore| over inferred chips %.2g -> %s"
          % (name, len(before), len(after), len(status_diff), worst, "SAME" if same else "DIFFERENT"))
    for k in sorted(status_diff)[:10]:
        b, a = before.get(k, ("absent",))[0], after.get(k, ("absent",))[0]
        print("   %s %s: before %s, after %s" % (k[0], k[1], b, a))
    return same


def _compare(name: str, before: Dict, after: Dict, tolerance: float) -> bool:
    only_b = sorted(set(before) - set(after))
    only_a = sorted(set(after) - set(before))
    common = set(before) & set(after)
    worst = max((abs(before[k] - after[k]) for k in common), default=0.0)
    same = not only_b and not only_a and worst <= tolerance
    print("%-10s before %4d, after %4d detections; only before %d, only after %d; max |dscore| %.2g -> %s"
          % (name, len(before), len(after), len(only_b), len(only_a), worst, "SAME" if same else "DIFFERENT"))
    for k in only_b[:10]:
        print("   only before: %s %s (%.4f)" % (k[0], k[1], before[k]))
    for k in only_a[:10]:
        print("   only after:  %s %s (%.4f)" % (k[0], k[1], after[k]))
    return same


def _naip_aoi(folder: Path, data: Path) -> Optional[Tuple[Path, List[Path]]]:
    scenes = sorted((data / "naip").glob("*.tif"))
    if not scenes:
        return None
    import rasterio
    from rasterio.warp import transform_bounds

    boxes = []
    for p in scenes:
        with rasterio.open(p) as src:
            boxes.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    w, s = max(b[0] for b in boxes), max(b[1] for b in boxes)
    e, n = min(b[2] for b in boxes), min(b[3] for b in boxes)
    aoi = folder / "naip_aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"aoi_id": "naip"},
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}]}))
    return aoi, scenes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git ref of the earlier engine")
    ap.add_argument("--runtime", default="eager", help="inference runtime for both runs (default eager)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max |score difference| (default 1e-4)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="gb-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "before-tree"
    if tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before], check=True,
                   capture_output=True)
    try:
        before_engine, after_engine = tree / "engine", ROOT / "engine"
        world = work / "world"
        if not (world / "world.json").exists():
            code = ("from groundbreak.world import demo_spec, generate_world; "
                    "generate_world(%r, demo_spec(7))" % str(world))
            subprocess.run([str(PY), "-c", code], env=_env(before_engine), check=True)
        cases = [("demo", world / "aoi.geojson", sorted((world / "scenes").glob("*.tif")), [])]
        data = os.environ.get("GROUNDBREAK_REAL_DATA")
        naip = _naip_aoi(work, Path(data)) if data else None
        if naip:
            cases.append(("naip", naip[0], naip[1], ["--allow-resample"]))
        else:
            print("naip       skipped: GROUNDBREAK_REAL_DATA is not set")
        ok = True
        for name, aoi, scenes, extra in cases:
            scenes = [s for s in scenes if not s.stem.endswith("_mask")]
            outs = {}
            for label, engine in (("before", before_engine), ("after", after_engine)):
                out = work / ("%s-%s.gpkg" % (name, label))
                if out.exists():
                    out.unlink()
                opts = [o for o in extra if _supports(engine, o)]
                _run(engine, ["--aoi", str(aoi), "--scenes", *map(str, scenes), "--out", str(out),
                              "--runtime", args.runtime, *opts], work / ("%s-%s.log" % (name, label)))
                outs[label] = (_detections(out), _chips(out))
            ok &= _compare(name, outs["before"][0], outs["after"][0], args.tolerance)
            ok &= _compare_chips(name, outs["before"][1], outs["after"][1], args.tolerance)
        return 0 if ok else 1
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
