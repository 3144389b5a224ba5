#!/usr/bin/env bash
# README command 1: install the engine and run the whole pipeline on built-in demo data.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_engine.sh"
exec "$ROOT/.venv/bin/groundbreak" demo "$@"
