"""Engine command lines: which interpreter, which arguments, which environment.

Pure standard library (no QGIS) so it is unit-tested without QGIS and shared by the dock, the
Processing algorithms and the "Set up engine" action.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import PluginError

# Inherited by QGIS from its own start-up; each breaks the engine's bundled GDAL/PROJ or its Python.
DROPPED_ENV = ("PYTHONHOME", "PYTHONPATH", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA", "GDAL_DRIVER_PATH")

PLUGIN_DIR = Path(__file__).resolve().parent
# The plugin zip carries the default model package here (an installed engine wheel has no
# resources/ folder); the engine reads GROUNDBREAK_MODEL for its default.
BUNDLED_MODEL = "models/groundbreak-demo"


class RequestError(PluginError):
    """A request that cannot be turned into a command line (says what and how to fix)."""


@dataclass(frozen=True)
class RunRequest:
    """Everything a ``groundbreak run`` / ``plan`` needs; built by the dock or an algorithm."""

    aois: Tuple[str, ...]
    scenes: Tuple[str, ...]
    out: Optional[str] = None
    model: Optional[str] = None
    min_valid: Optional[float] = None
    batch_size: Optional[int] = None
    threads: Optional[int] = None
    price_per_hour: Optional[float] = None
    aoi_id_field: Optional[str] = None
    band_order: Tuple[str, ...] = ()
    runtime: Optional[str] = None
    overwrite: bool = False  # run: replace an existing output (the engine does so once the new run commits)
    extra: Tuple[str, ...] = field(default=())

    def validate(self, command: str) -> None:
        if not self.aois:
            raise RequestError("no AOI given", "draw an AOI on the map or pick a polygon layer")
        if not self.scenes:
            raise RequestError("no scenes given", "add raster layers, files, a folder or a STAC JSON")
        if command == "run" and not self.out:
            raise RequestError("no output GeoPackage given", "choose where to write detections")
        if self.min_valid is not None and not 0.0 <= self.min_valid <= 1.0:
            raise RequestError(
                "minimum valid fraction %r is outside 0..1" % self.min_valid,
                "use e.g. 0.5 (half of a chip must be valid data)",
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise RequestError("batch size %r must be at least 1" % self.batch_size)
        if self.threads is not None and self.threads < 1:
            raise RequestError("threads %r must be at least 1" % self.threads)
        if self.price_per_hour is not None and self.price_per_hour < 0:
            raise RequestError("price per hour %r must not be negative" % self.price_per_hour)


def run_args(request: RunRequest, command: str = "run", events: bool = True) -> List[str]:
    """Arguments after ``-m groundbreak`` for ``run`` or ``plan``."""
    if command not in ("run", "plan"):
        raise RequestError("unknown engine command %r" % command)
    request.validate(command)
    args: List[str] = [command]
    for aoi in request.aois:
        args += ["--aoi", str(aoi)]
    args.append("--scenes")
    args += [str(scene) for scene in request.scenes]
    if command == "run":
        args += ["--out", str(request.out)]
    if request.model:
        args += ["--model", str(request.model)]
    if request.min_valid is not None:
        args += ["--min-valid", _num(request.min_valid)]
    # batch size and runtime shape inference only: the engine's plan does not take them
    if request.batch_size is not None and command == "run":
        args += ["--batch-size", str(int(request.batch_size))]
    if request.threads is not None:
        args += ["--threads", str(int(request.threads))]
    if request.price_per_hour is not None:
        args += ["--price-per-hour", _num(request.price_per_hour)]
    if request.aoi_id_field:
        args += ["--aoi-id-field", request.aoi_id_field]
    if request.band_order:
        args += ["--band-order", ",".join(request.band_order)]
    if request.runtime and command == "run":
        args += ["--runtime", request.runtime]
    if request.overwrite and command == "run":
        args.append("--overwrite")
    args += list(request.extra)
    if events:
        args += ["--events", "jsonl"]
    return args


def info_args(scenes: Sequence[str], model: Optional[str] = None, check_model: bool = True) -> List[str]:
    """``info --json [--model DIR] SPEC...``: the engine's discovery, and each scene checked against the
    model (``model`` None: the engine's default model) unless ``check_model`` is off (older engines)."""
    if not scenes:
        raise RequestError("no scenes given", "add raster layers, files, a folder or a STAC JSON")
    args = ["info", "--json"]
    if check_model and model:
        args += ["--model", str(model)]
    return args + [str(scene) for scene in scenes]


def model_args(model_dir: Optional[str] = None) -> List[str]:
    """``model show [DIR] --json``: the model card (no DIR: the engine's default model)."""
    return ["model", "show"] + ([str(model_dir)] if model_dir else []) + ["--json"]


def timeline_args(gpkg: str, enter: Optional[float] = None, exit_: Optional[float] = None,
                  min_revisits: Optional[int] = None, end_revisits: Optional[int] = None,
                  smart_dir: Optional[str] = None) -> List[str]:
    """``timeline --in RUN.gpkg [--enter X --exit Y --min-revisits N --end-revisits M] [--smart DIR] --json``:
    sites with dates built into the run's GeoPackage (None: the engine's default for that option)."""
    if not gpkg:
        raise RequestError("no run GeoPackage given", "choose the output of a run over several dates")
    for name, value in (("enter", enter), ("exit", exit_)):
        if value is not None and not 0.0 < value <= 1.0:
            raise RequestError("the %s threshold %r is outside (0, 1]" % (name, value), "use a score such as 0.7")
    if enter is not None and exit_ is not None and exit_ > enter:
        raise RequestError("the exit threshold %s is above the enter threshold %s" % (_num(exit_), _num(enter)),
                           "hysteresis needs exit <= enter, e.g. enter 0.7 and exit 0.5")
    args = ["timeline", "--in", str(gpkg)]
    if enter is not None:
        args += ["--enter", _num(enter)]
    if exit_ is not None:
        args += ["--exit", _num(exit_)]
    for flag, count in (("--min-revisits", min_revisits), ("--end-revisits", end_revisits)):
        if count is not None:
            if count < 1:
                raise RequestError("%s %r must be at least 1" % (flag, count), "use 2 to need a repeat")
            args += [flag, str(int(count))]
    if smart_dir:
        args += ["--smart", str(smart_dir)]
    return args + ["--json"]


def engine_argv(interpreter: str, args: Sequence[str]) -> List[str]:
    """The full argv: the engine's interpreter runs the engine as a module."""
    if not interpreter:
        raise RequestError(
            "no engine interpreter configured",
            "open Groundbreak settings and choose the engine's Python, or use 'Set up engine'",
        )
    return [str(interpreter), "-m", "groundbreak"] + list(args)


def clean_environment(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """QGIS's environment minus the variables that break the engine's own GDAL/PROJ/Python."""
    env = dict(os.environ if base is None else base)
    for name in DROPPED_ENV:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    bundled = PLUGIN_DIR / BUNDLED_MODEL
    if "GROUNDBREAK_MODEL" not in env and (bundled / "model.json").is_file():
        env["GROUNDBREAK_MODEL"] = str(bundled)
    return env


def checkout_root() -> Optional[Path]:
    """The repository root when the plugin runs from a checkout (``<repo>/plugin``), else None."""
    candidate = PLUGIN_DIR.parent
    if (candidate / "engine" / "groundbreak").is_dir() and (candidate / "pyproject.toml").is_file():
        return candidate
    return None


def venv_python(venv: Path) -> Path:
    if sys.platform.startswith("win"):
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def default_interpreter(profile_dir: Optional[str] = None) -> str:
    """Where the engine's Python is expected when the user has not chosen one.

    Never ``sys.executable``: inside QGIS that is not QGIS's Python (and not the engine's).
    """
    root = checkout_root()
    if root is not None and venv_python(root / ".venv").exists():
        return str(venv_python(root / ".venv"))
    if profile_dir:
        # the newest environment "Set up engine" made (engine-YYYYmmdd-HHMMSS), else the older name
        root = Path(profile_dir) / "groundbreak"
        made = sorted(p for p in root.glob("engine-*") if p.is_dir() and venv_python(p).exists())
        return str(venv_python(made[-1] if made else root / "engine-venv"))
    return ""


def _num(value: float) -> str:
    return ("%.6f" % float(value)).rstrip("0").rstrip(".") or "0"
