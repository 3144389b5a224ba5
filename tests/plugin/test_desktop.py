"""The real QGIS desktop under Xvfb at 1366 x 768: the built zip in a fresh profile, the real engine, the
analyst's first hour on demo data (a failed and a working set-up, a folder with sidecar masks, a wrong
scene, a refused plan, a plan, a streamed run, the output-exists dialog, a resumed run, review), with a
screenshot of each state in artifacts/plugin/ (look at them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ENGINE_PY, HERE, REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("qgis")), reason="needs Xvfb and the qgis desktop"),
    pytest.mark.skipif(not ENGINE_PY.exists(), reason="the engine venv %s is absent (set GROUNDBREAK_ENGINE_PY)"
                       % ENGINE_PY),
]


def test_desktop_first_hour_with_screenshots():
    done = subprocess.run([sys.executable, str(HERE / "desktop" / "run_desktop.py"), "--timeout", "900"],
                          capture_output=True, timeout=1000)
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, out[-3000:] + done.stderr.decode("utf-8", "replace")[-3000:]
    result = json.loads((REPO / "artifacts" / "plugin" / "desktop-result.json").read_text())
    checks = result["checks"]
    assert result["engine"] == "real", "the desktop run used the %s engine" % result["engine"]
    assert result["ok"] and result["status"] in ("ok", "partial") and result["detections"] > 0
    assert result["mid_run"]["engine_running"] and result["mid_run"]["live_features"] > 0
    assert checks["engine_label"].startswith("Engine ready: groundbreak ")
    # the common path fits 1366 x 768 without scrolling
    assert not checks["dock_scrolls"] and not checks["dock_scrolls_after_plan"] and not checks["dock_scrolls_after_run"]
    assert "Working out what to install" in checks["failed_setup_message"] and checks["failed_setup_kept_engine"]
    assert checks["good_setup"][0] and "does not answer" in checks["good_setup"][1]
    assert not any("_mask" in row for row in checks["scene_rows"]) and "Skipped 3 files" in checks["skipped"]
    bad = [row for row in checks["bad_scene_rows"] if "rgb_300m" in row][0]
    assert "problem" in bad and "nir" in checks["bad_scene_message"] and "300" in checks["bad_scene_message"]
    assert checks["plan_refused"] and checks["plan_problems"].startswith("Plan failed")
    assert "nir" in checks["plan_problems"] and "Hint:" in checks["plan_problems"]
    assert "already exists" in result["resume_dialog"]
    assert checks["resumed_status"] == "ok" and "resumed: " in checks["resumed_summary"]
    assert "resumed " in checks["resumed_counts"]
    # a second run over a 10-date world: its sites, styled by start year, and one site's score over time
    assert checks["sites_run_status"] == "ok" and checks["sites_count"] > 0 and len(checks["sites_categories"]) >= 1
    assert "see the Sites tab" in checks["sites_summary"] and not checks["dock_scrolls_sites"]
    plot = checks["site_plot"]
    assert plot["site"] and plot["caption"].startswith(plot["site"] + " · started ")
    assert plot["observations"] == 10 and plot["known"] + plot["unknown"] == 10 and plot["unknown"] > 0, plot
    assert len(result["shots"]) == 13
