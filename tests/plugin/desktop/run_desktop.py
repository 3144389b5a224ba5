#!/usr/bin/env python3
"""The desktop test: build the zip, install it into a fresh QGIS profile, enable it, start QGIS on
Xvfb and let drive_qgis.py run a detection on demo data with screenshots.

    python3 tests/plugin/desktop/run_desktop.py [--fake] [--shots artifacts/plugin]

Uses the real engine (GROUNDBREAK_ENGINE_PY, default ``.venv/bin/python``; demo world from
``groundbreak.world``). With --fake, the fake engine replays a recorded stream over the same imagery.
Never falls back silently: when the real engine is expected and does not work, this fails with why.
Exits 0 when the run finished with detections and both screenshots exist.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ENGINE_PY = Path(os.environ.get("GROUNDBREAK_ENGINE_PY", str(REPO / ".venv" / "bin" / "python")))
FAKE = HERE.parent / "fake_engine.py"

WORLD_SCRIPT = """
import json, sys
from groundbreak.world import generate_world, test_spec
w = generate_world(sys.argv[1], test_spec())
print(json.dumps({"aoi": str(w.aoi), "scenes": [str(p) for p in w.scene_paths], "crs": w.crs}))
"""

BAD_SCENE = """
import sys, numpy as np, rasterio
from rasterio.transform import from_origin
with rasterio.open(sys.argv[1], "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8", crs="EPSG:32614",
                   transform=from_origin(500000, 5210000, 300, 300)) as ds:
    ds.write(np.full((3, 40, 40), 90, dtype="uint8"))
    for i, name in enumerate(("red", "green", "blue"), 1):
        ds.set_band_description(i, name)
"""

# a 2 x 2 km cut of the timeline demo world (10 dates, sites that start and end between them): the
# 3-date world above has no sites, so the Sites tab is shown after a second run over this one
TIMELINE_WORLD_SCRIPT = """
import json, sys
from dataclasses import replace
from groundbreak.world import generate_world, timeline_spec
w = generate_world(sys.argv[1], replace(timeline_spec(4), width=1024, height=1024, n_sites=6, n_lookalikes=1))
print(json.dumps({"aoi": str(w.aoi), "scenes": [str(p) for p in w.scene_paths], "crs": w.crs}))
"""

MODEL_SCRIPT = """
import sys
from groundbreak.modelpack import make_random_package
make_random_package(sys.argv[1], seed=3, width=8, threshold=0.5)
"""


def engine_problem() -> str:
    """Why the real engine cannot run ("" when it can)."""
    if not ENGINE_PY.exists():
        return "%s does not exist" % ENGINE_PY
    done = subprocess.run([str(ENGINE_PY), "-m", "groundbreak", "--help"], capture_output=True, timeout=300)
    if done.returncode != 0:
        return "%s -m groundbreak --help exits %d: %s" % (ENGINE_PY, done.returncode,
                                                            done.stderr.decode("utf-8", "replace")[-1500:])
    return ""


def model_for_run(dest: Path) -> str:
    """"" (the engine's bundled demo model) when it loads, else a fixed random-weights package."""
    done = subprocess.run([str(ENGINE_PY), "-m", "groundbreak", "model", "show", "--json"], capture_output=True,
                          timeout=300)
    if done.returncode == 0:
        return ""
    done = subprocess.run([str(ENGINE_PY), "-c", MODEL_SCRIPT, str(dest)], capture_output=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit("could not make a model package: %s" % done.stderr.decode()[-2000:])
    return str(dest)


def make_world(dest: Path, script: str = WORLD_SCRIPT) -> dict:
    if not ENGINE_PY.exists():
        raise SystemExit("the engine venv %s is needed to generate the demo world" % ENGINE_PY)
    done = subprocess.run([str(ENGINE_PY), "-c", script, str(dest)], capture_output=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit("demo world generation failed: %s" % done.stderr.decode()[-2000:])
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def free_display() -> int:
    for n in range(99, 160):
        if not Path("/tmp/.X11-unix/X%d" % n).exists() and not Path("/tmp/.X%d-lock" % n).exists():
            return n
    raise SystemExit("no free X display number")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fake", action="store_true", help="use the fake engine even if the real one works")
    parser.add_argument("--shots", type=Path, default=REPO / "artifacts" / "plugin")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--screen", default="1366x768", help="the X screen (the dock must fit 1366x768)")
    parser.add_argument("--no-setup", action="store_true", help="skip the two Set up engine states")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "scripts"))
    import build_plugin

    work = Path(tempfile.mkdtemp(prefix="groundbreak-desktop-"))
    args.shots.mkdir(parents=True, exist_ok=True)
    for old in args.shots.glob("desktop-*.png"):
        old.unlink()
    real = not args.fake
    if real and engine_problem():
        print("desktop test: the real engine was asked for and does not work: %s" % engine_problem(), file=sys.stderr)
        return 2
    world = make_world(work / "world")
    timeline_world = make_world(work / "timeline-world", TIMELINE_WORLD_SCRIPT) if real else None
    bad_scene = work / "other" / "rgb_300m_20220601.tif"
    bad_scene.parent.mkdir()
    done = subprocess.run([str(ENGINE_PY), "-c", BAD_SCENE, str(bad_scene)], capture_output=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit("could not write the 3-band 300 m scene: %s" % done.stderr.decode()[-2000:])
    refused = socket.socket()  # bound, never listening: an extra package index that refuses connections
    refused.bind(("127.0.0.1", 0))
    width, height = (int(v) for v in args.screen.lower().split("x"))
    model = model_for_run(work / "model") if real else ""
    zip_path = build_plugin.build(work / "dist", engine=False)
    profile = work / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    interpreter = str(ENGINE_PY) if real else str(FAKE)
    ini.write_text(
        "[PythonPlugins]\ngroundbreak=true\n\n"
        # eager: the engine's "auto" runtime first calibrates OpenVINO, minutes on 2 cores
        "[groundbreak]\ninterpreter=%s\nthreads=2\nbatch_size=2\nmin_valid=0.5\nprice_per_hour=0.1\n"
        "runtime=eager\n\n[qgis]\ncheckVersion=false\nshowTips%%20322=false\n" % interpreter)
    config = {
        "scenes": world["scenes"], "aoi": world["aoi"], "out": str(work / "run" / "detections.gpkg"),
        "labels": str(work / "run" / "labels.gpkg"), "shots_dir": str(args.shots.resolve()),
        "result": str(work / "result.json"), "timeout_s": args.timeout - 60, "model": model,
        "screen": [width, height], "dock_width": 400 if width < 1500 else 560, "bad_scene": str(bad_scene),
        "setup": not args.no_setup, "refused_index": "http://127.0.0.1:%d/simple" % refused.getsockname()[1],
        "tests_dir": str(HERE.parent), "work": str(work), "timeline_world": timeline_world,
        "timeline_out": str(work / "run" / "timeline.gpkg"),
    }
    (work / "config.json").write_text(json.dumps(config))
    display = free_display()
    xvfb = subprocess.Popen(["Xvfb", ":%d" % display, "-screen", "0", "%dx%dx24" % (width, height), "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "QGIS_CUSTOM_CONFIG_PATH")}
    env.update(DISPLAY=":%d" % display, GB_DESKTOP_CONFIG=str(work / "config.json"))
    if not real:
        env.update(GB_FAKE_DELAY="0.4", GB_FAKE_FOLLOW_AOI="1")
    print("desktop test: engine=%s display=:%d work=%s" % ("real" if real else "fake", display, work), flush=True)
    try:
        time.sleep(1.0)
        qgis = subprocess.run(
            ["qgis", "--profiles-path", str(profile), "--nologo", "--noversioncheck",
             "--code", str(HERE / "drive_qgis.py")],
            env=env, capture_output=True, timeout=args.timeout)
        rc = qgis.returncode
        (work / "qgis.log").write_bytes(qgis.stdout + b"\n---stderr---\n" + qgis.stderr)
    except subprocess.TimeoutExpired:
        rc = -1
    finally:
        xvfb.terminate()
        xvfb.wait(10)
        refused.close()
    result = json.loads((work / "result.json").read_text()) if (work / "result.json").exists() else {}
    result["engine"] = "real" if real else "fake"
    result["model"] = model or "bundled default"
    result["qgis_exit_code"] = rc
    (args.shots / "desktop-result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    shots_ok = all(Path(p).is_file() and Path(p).stat().st_size > 10000 for p in result.get("shots", {}).values())
    ok = rc == 0 and result.get("ok") and shots_ok
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("desktop test FAILED; QGIS output kept in %s/qgis.log" % work, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
