"""Where packaged files live: in the plugin folder (a checkout's ``plugin/`` or the installed
``groundbreak/``, laid out the same way by pb_tool and scripts/build_plugin.py)."""

from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def resource_path(kind: str, name: str) -> str:
    """``kind`` is ``styles`` or ``icons``; returns "" when the file is missing."""
    candidate = PLUGIN_DIR / kind / name
    return str(candidate) if candidate.is_file() else ""


def icon_path() -> str:
    candidate = PLUGIN_DIR / "icon.png"
    return str(candidate) if candidate.is_file() else ""
