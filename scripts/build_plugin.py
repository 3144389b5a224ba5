#!/usr/bin/env python3
"""Build the QGIS plugin zip: ``dist/groundbreak-<version>.zip`` holding the folder ``groundbreak/``.

    python3 scripts/build_plugin.py                 # plugin + engine wheel + default model
    python3 scripts/build_plugin.py --no-engine     # plugin only (tests; a checkout's engine is used)
    python3 scripts/build_plugin.py --out /tmp/dist

The plugin's files are the ones ``plugin/pb_tool.cfg`` lists (python_files, extras, extra_dirs):
the same files ``pb_tool deploy`` / ``pb_tool zip`` ship, so both ways of building agree. This
wrapper adds what pb_tool cannot: unless ``--no-engine``, ``engine/groundbreak-<version>-py3-none-any.whl``
built from this repository with ``pip wheel --no-deps``, and the default model package
(``resources/models/groundbreak-demo`` -> ``models/groundbreak-demo``, handed to the engine as
``GROUNDBREAK_MODEL``). "Set up engine" installs that wheel (with torch and OpenVINO) into a new venv.
Install the zip in QGIS with Plugins > Manage and Install Plugins > Install from ZIP.
"""

from __future__ import annotations

import argparse
import configparser
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugin"
PACKAGE = "groundbreak"
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
# byte-identical copies of the engine's stdlib-only modules
SHARED = ("protocol.py", "names.py")


def pb_tool_config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(PLUGIN / "pb_tool.cfg", encoding="utf-8")
    return parser


def plugin_version() -> str:
    parser = configparser.ConfigParser()
    parser.read(PLUGIN / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def check_metadata() -> None:
    parser = configparser.ConfigParser()
    parser.read(PLUGIN / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    required = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
                "tracker", "homepage", "icon", "tags", "changelog", "hasProcessingProvider")
    missing = [key for key in required if not general.get(key, "").strip()]
    if missing:
        raise SystemExit("plugin/metadata.txt lacks %s" % ", ".join(missing))


def plugin_files() -> list[str]:
    """Paths relative to plugin/ that pb_tool.cfg ships (files, then the contents of extra_dirs)."""
    cfg = pb_tool_config()
    files = []
    for key in ("python_files", "main_dialog", "extras"):
        files += cfg.get("files", key, fallback="").split()
    for folder in cfg.get("files", "extra_dirs", fallback="").split():
        for path in sorted((PLUGIN / folder).rglob("*")):
            rel = path.relative_to(PLUGIN)
            if path.is_file() and not SKIP_PARTS & set(rel.parts) and path.suffix not in SKIP_SUFFIXES:
                files.append(rel.as_posix())
    missing = [f for f in files if not (PLUGIN / f).is_file()]
    if missing:
        raise SystemExit("plugin/pb_tool.cfg lists files that do not exist: %s" % ", ".join(missing))
    return files


def files_to_pack() -> list[tuple[Path, str]]:
    """(source file, path inside the zip) pairs."""
    out = [(PLUGIN / rel, "%s/%s" % (PACKAGE, rel)) for rel in plugin_files()]
    # the default model package: an installed engine wheel has no resources/ folder, so the plugin
    # points the engine at this copy (GROUNDBREAK_MODEL)
    model = REPO / "resources" / "models" / "groundbreak-demo"
    if (model / "model.json").is_file():
        for path in sorted(model.rglob("*")):
            if path.is_file() and not SKIP_PARTS & set(path.parts):
                out.append((path, "%s/models/groundbreak-demo/%s" % (PACKAGE, path.relative_to(model).as_posix())))
    else:
        print("note: %s has no model.json; the zip carries no default model" % model, file=sys.stderr)
    license_file = REPO / "LICENSE"
    if license_file.is_file():
        out.append((license_file, "%s/LICENSE" % PACKAGE))
    return out


def check_copies() -> None:
    for name in SHARED:
        if (PLUGIN / name).read_bytes() != (REPO / "engine" / "groundbreak" / name).read_bytes():
            raise SystemExit("plugin/%s differs from engine/groundbreak/%s: copy it before building" % (name, name))


def build_engine_wheel(workdir: Path, python: str) -> Path:
    """``pip wheel --no-deps`` of the repository (the engine package only; dependencies come from PyPI)."""
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(workdir), str(REPO)]
    print("building the engine wheel:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(workdir.glob("groundbreak-*.whl"))
    if not wheels:
        raise SystemExit("pip wheel produced no groundbreak wheel in %s" % workdir)
    return wheels[-1]


def build(out_dir: Path, engine: bool = True, python: str | None = None) -> Path:
    check_metadata()
    check_copies()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ("%s-%s.zip" % (PACKAGE, plugin_version()))
    with tempfile.TemporaryDirectory() as tmp:
        entries = files_to_pack()
        if engine:
            python = python or str(REPO / ".venv" / "bin" / "python")
            if not Path(python).exists():
                python = sys.executable
            wheel = build_engine_wheel(Path(tmp), python)
            entries.append((wheel, "%s/engine/%s" % (PACKAGE, wheel.name)))
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for source, name in entries:
                zf.write(source, name)
    print("built %s (%d files)" % (target, len(entries)))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--no-engine", action="store_true", help="do not bundle the engine wheel")
    parser.add_argument("--python", help="interpreter that builds the wheel (default: .venv/bin/python)")
    args = parser.parse_args(argv)
    build(args.out, engine=not args.no_engine, python=args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
