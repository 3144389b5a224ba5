"""``groundbreak demo`` as a newcomer runs it (README command 1): a subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
from PIL import Image

from groundbreak.model import default_model_path, load_model_package


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_it_is_a_demo(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "groundbreak", "demo", "--out-dir", str(out), "--events", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["type"] == "hello" and events[-1] == {**events[-1], "type": "done", "status": "ok"}
    result = next(e for e in events if e["type"] == "result")
    stats = result["stats"]
    assert stats["chips_planned"] == (sum(stats["chips_dropped"].values()) + stats["chips_inferred"]
                                      + stats["chips_failed"])
    assert stats["chips_dropped"]["cloud"] > 0 and stats["chips_dropped"]["nodata"] > 0
    assert stats["model_demo"] is True
    assert any(e["type"] == "warning" and e["code"] == "demo_model" for e in events)
    assert result["cost"]["per_km2_usd"] > 0

    gpkg = Path(result["outputs"]["gpkg"])
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert {"detections", "chips", "runs", "sites", "site_observations"} <= layers
    assert pyogrio.read_info(gpkg, layer="detections")["features"] == stats["detections"]

    png = Image.open(result["outputs"]["quicklook"])
    assert png.width >= 640 and png.height >= 640
    plot = Image.open(result["outputs"]["timelines"])
    assert plot.width >= 600 and plot.height >= 300

    # The default model on the timeline demo world (timeline_spec(7): 10 dates, 7 sites with known
    # starts; seed 7 was never used in training): the chip-level bar of issue 3 ...
    truth = stats["truth"]
    assert truth["f1"] >= 0.9, truth
    # ... and issue 8's site-level bar: >= 90% of the sites found with the start within one
    # revisit, no site reported where none was built.
    sites = stats["sites"]
    assert sites["truth_sites"] == 7 and stats["chips_dropped"]["cloud"] > 0
    assert sites["share_found_within_one_revisit"] >= 0.9, sites
    assert sites["false_sites"] == 0, sites
    smart = Path(result["outputs"]["smart"])
    assert len(list((smart / "site_models").glob("ZZ_R007_*.geojson"))) == sites["proposed_sites"]
    assert "DEMO" in proc.stderr  # the human summary (stderr) says it too
    assert "sites         " in proc.stderr


def test_default_model_package_is_a_declared_demo():
    model = load_model_package(None)
    assert model.root == default_model_path()
    assert model.demo is True
    assert model.bands == ("red", "green", "blue", "nir")
    card = (model.root / "README.md").read_text()
    assert "demo" in card.lower() and "not" in card.lower()
    assert sum(p.stat().st_size for p in model.root.iterdir() if p.is_file()) < 20 * 1024 * 1024
