"""The real QGIS desktop under Xvfb: the built zip in a fresh profile runs a detection on demo data,
with screenshots mid-run and finished in artifacts/plugin/ (look at them)."""

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


def test_desktop_run_with_screenshots():
    done = subprocess.run([sys.executable, str(HERE / "desktop" / "run_desktop.py"), "--timeout", "900"],
                          capture_output=True, timeout=1000)
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, out[-3000:] + done.stderr.decode("utf-8", "replace")[-3000:]
    result = json.loads((REPO / "artifacts" / "plugin" / "desktop-result.json").read_text())
    assert result["engine"] == "real", "the desktop run used the %s engine" % result["engine"]
    assert result["ok"] and result["status"] in ("ok", "partial") and result["detections"] > 0
    assert result["mid_run"]["engine_running"] and result["mid_run"]["live_features"] > 0
    assert set(result["shots"]) == {"midrun", "finished"}
