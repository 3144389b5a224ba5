#!/usr/bin/env bash
# README command 2 (and exactly what .ci/run runs): install everything, run every test.
# Needs root (or sudo) for the Debian packages of QGIS on a fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PKGS=(qgis python3-qgis qgis-providers xvfb xauth imagemagick python3-venv)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/setup_engine.sh

if [ -z "${GROUNDBREAK_REAL_DATA:-}" ]; then
  echo "== GROUNDBREAK_REAL_DATA is not set: tests on real imagery will be skipped" >&2
fi

echo "== engine tests" >&2
engine_rc=0
.venv/bin/python -m pytest tests/engine -q -p no:cacheprovider || engine_rc=$?

echo "== plugin tests (real QGIS 3.22, offscreen)" >&2
plugin_rc=0
bash scripts/test_plugin.sh || plugin_rc=$?

echo "== engine tests exit $engine_rc, plugin tests exit $plugin_rc" >&2
[ "$engine_rc" -eq 0 ] && [ "$plugin_rc" -eq 0 ]
