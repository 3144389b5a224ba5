"""Shared set-up for plugin tests: the repo root on sys.path (the plugin imports as ``plugin``),
the fake engine and the recorded streams."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"
FAKE_ENGINE = HERE / "fake_engine.py"
ENGINE_PY = Path(os.environ.get("GROUNDBREAK_ENGINE_PY", str(REPO / ".venv" / "bin" / "python")))

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    """The fake engine's path, with its knobs reset and its argv log in tmp_path."""
    for name in ("GB_FAKE_STREAM", "GB_FAKE_DELAY", "GB_FAKE_CRASH", "GB_FAKE_EXIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GB_FAKE_ARGV_LOG", str(tmp_path / "argv.jsonl"))
    return str(FAKE_ENGINE)


def engine_available() -> bool:
    import subprocess

    if not ENGINE_PY.exists():
        return False
    try:
        done = subprocess.run([str(ENGINE_PY), "-m", "groundbreak", "--help"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


needs_engine = pytest.mark.skipif(
    not engine_available(),
    reason="the engine venv (%s with groundbreak installed; `groundbreak --help` must work) is absent" % ENGINE_PY,
)


@pytest.fixture(scope="module")
def provider(qgis_app):
    """The Groundbreak Processing provider registered in QGIS's real registry (the one home for it)."""
    import sys

    from qgis.core import QgsApplication

    if "/usr/share/qgis/python/plugins" not in sys.path:
        sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    from plugin.provider import GroundbreakProvider

    Processing.initialize()
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("groundbreak")
    if existing is not None:
        registry.removeProvider(existing)
    prov = GroundbreakProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)
