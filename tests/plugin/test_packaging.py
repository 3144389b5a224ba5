"""Packaging in the QGIS plugin developers' convention: ``plugin/pb_tool.cfg`` drives ``pb_tool deploy``
and ``pb_tool zip``, and scripts/build_plugin.py packs the same files (plus the engine wheel and model)."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

PB_TOOL = shutil.which("pb_tool") or str(Path(sys.executable).parent / "pb_tool")
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
needs_pb_tool = pytest.mark.skipif(not os.path.exists(PB_TOOL),
                                   reason="pb_tool is not installed (scripts/test_plugin.sh installs it)")


def cfg_files():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "plugin" / "pb_tool.cfg")
    return cfg


def test_every_plugin_module_is_listed_in_pb_tool_cfg():
    listed = set(cfg_files().get("files", "python_files").split())
    modules = {p.name for p in (REPO / "plugin").glob("*.py")}
    assert modules == listed, "add to / remove from plugin/pb_tool.cfg python_files: %s" % sorted(modules ^ listed)
    assert cfg_files().get("plugin", "name") == "groundbreak"


def pb_tool(args, cwd):
    done = subprocess.run([PB_TOOL] + args, cwd=str(cwd), capture_output=True, timeout=300, input=b"y\n")
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    return done.stdout.decode()


@needs_pb_tool
def test_pb_tool_deploy_and_zip_ship_what_build_plugin_ships(tmp_path):
    # a copy of plugin/: pb_tool zip writes groundbreak.zip into the folder it runs in
    src = tmp_path / "src"
    shutil.copytree(REPO / "plugin", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "groundbreak.zip"))
    deployed = tmp_path / "plugins"
    pb_tool(["deploy", "-y", "-n", "-p", str(deployed)], src)
    pb_tool(["zip", "-q", "-n", "-p", str(deployed)], src)
    with zipfile.ZipFile(src / "groundbreak.zip") as zf:
        pb_names = {n for n in zf.namelist() if not n.endswith("/")}
    deployed_names = {p.relative_to(deployed).as_posix() for p in deployed.rglob("*") if p.is_file()}
    assert pb_names == deployed_names

    sys.path.insert(0, str(REPO / "scripts"))
    import build_plugin

    built = build_plugin.build(tmp_path / "dist", engine=False)
    with zipfile.ZipFile(built) as zf:
        ours = {n for n in zf.namelist() if not n.startswith("groundbreak/models/") and n != "groundbreak/LICENSE"}
    assert ours == pb_names
    assert {"groundbreak/__init__.py", "groundbreak/metadata.txt", "groundbreak/icon.png",
            "groundbreak/styles/detections.qml", "groundbreak/names.py", "groundbreak/protocol.py"} <= pb_names


@needs_pb_tool
@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process.bin is not installed")
def test_a_pb_tool_deployed_plugin_loads_in_qgis(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "plugin", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "groundbreak.zip"))
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    pb_tool(["deploy", "-y", "-n", "-p", str(plugins)], src)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngroundbreak=true\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile))
    done = subprocess.run([QGIS_PROCESS, "--json", "list"], capture_output=True, env=env, timeout=180)
    stdout = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, stdout[-2000:]
    providers = json.loads(stdout[stdout.index("{"):])["providers"]
    assert {"groundbreak:detect", "groundbreak:plan"} <= set(providers["groundbreak"]["algorithms"])
