#!/usr/bin/env bash
# Create (or update) the engine's virtualenv at .venv/ in the repository root. Idempotent.
# torch is pinned to a CPU wheel: an unpinned torch resolves to a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"

if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "Error: $PY is missing or older than Python 3.10" >&2
  echo "Hint: on Debian run: apt-get install -y python3 python3-venv python3-pip" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating the engine virtualenv at $VENV" >&2
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    # A fresh Debian has python3 without venv/ensurepip: install it when we may.
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
      echo "== installing python3-venv (Debian)" >&2
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-pip >/dev/null
    fi
    if ! "$PY" -m venv "$VENV"; then
      echo "Error: could not create $VENV" >&2
      echo "Hint: on Debian run: apt-get install -y python3-venv" >&2
      exit 1
    fi
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
echo "== installing torch 2.13.0 (CPU) and the groundbreak engine" >&2
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e "$ROOT[fleet,fast,test]"
"$VENV/bin/python" -c "import groundbreak, torch, rasterio; print('engine ready: groundbreak', groundbreak.__version__, '| torch', torch.__version__, '| rasterio', rasterio.__version__)"
