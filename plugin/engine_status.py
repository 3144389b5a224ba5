"""Is the engine ready, which version, and can it use OpenVINO? One quick probe of its interpreter.

The probe reads package metadata and imports ``groundbreak`` (which never imports torch), so it
takes well under a second; the dock runs it at start and after "Set up engine", and set-up runs it
as its last check. Standard library only.
"""

from __future__ import annotations

from typing import List, Optional

from . import names

STATUS_SCRIPT = """
import json, sys
from importlib import metadata


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


import groundbreak

print(json.dumps({"groundbreak": getattr(groundbreak, "__version__", None) or version("groundbreak"),
                  "openvino": version("openvino"), "torch": version("torch"),
                  "python": sys.version.split()[0], "executable": sys.executable}))
"""


def status_argv(interpreter: str) -> List[str]:
    return [str(interpreter), "-c", STATUS_SCRIPT]


def describe_status(status: Optional[dict], runtime_setting: str, error: Optional[str] = None) -> str:
    """One line for the dock: ready or not, version, and the runtime runs will use."""
    if status is None:
        return "Engine not ready: %s" % (error or "not checked yet")
    runtime = runtime_setting or names.AUTO
    if runtime == names.AUTO:
        runtime_text = ("auto (OpenVINO %s)" % status["openvino"] if status.get("openvino")
                        else "auto: torch only, OpenVINO is not installed (Set up engine installs it)")
    else:
        runtime_text = runtime + " (from settings)"
        if runtime.startswith("openvino") and not status.get("openvino"):
            runtime_text += " but OpenVINO is not installed: runs will fail"
    if not status.get("torch"):
        runtime_text += ("; inference only (no torch): model packages without an OpenVINO IR cannot run"
                         if status.get("openvino") else "; torch is missing: runs will fail")
    return "Engine ready: groundbreak %s · runtime %s" % (status.get("groundbreak") or "?", runtime_text)
