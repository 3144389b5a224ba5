#!/usr/bin/env bash
# Plugin tests in real QGIS 3.22 (Debian qgis + python3-qgis):
#   1. create .venv-qgis (system site packages, so QGIS's own Python modules are used) if missing,
#   2. install the test tools (pytest, pytest-qgis, pytest-qt) into it,
#   3. run tests/plugin offscreen (unit, dock, map tool, review, Processing, qgis_process.bin,
#      end to end with the real engine when .venv has it, and the Xvfb desktop test).
# Usage: scripts/test_plugin.sh [extra pytest args]    (exit code = pytest's)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
QGIS_PY=/usr/bin/python3
VENV="$REPO/.venv-qgis"

if ! "$QGIS_PY" -c "import qgis.core" 2>/dev/null; then
    echo "QGIS Python bindings are missing: apt-get install -y --no-install-recommends qgis python3-qgis qgis-providers xvfb" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$QGIS_PY" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import pytest, pytest_qgis, pytestqt, pb_tool" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest pytest-qgis pytest-qt pb_tool
fi
mkdir -p artifacts/plugin
export QT_QPA_PLATFORM=offscreen
exec "$VENV/bin/python" -m pytest tests/plugin -p no:cacheprovider -q "$@"
