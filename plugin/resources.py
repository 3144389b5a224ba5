"""Where packaged files live: next to the plugin in the zip, or under ``resources/`` in a checkout."""

from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def resource_path(kind: str, name: str) -> str:
    """``kind`` is ``styles`` or ``icons``; returns "" when the file is missing."""
    for candidate in (PLUGIN_DIR / kind / name, PLUGIN_DIR.parent / "resources" / kind / name):
        if candidate.is_file():
            return str(candidate)
    return ""


def icon_path() -> str:
    return resource_path("icons", "icon.png")
