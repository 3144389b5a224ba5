"""The plugin runs inside QGIS's Python: only the stdlib, qgis.* and its own modules may be imported."""

from __future__ import annotations

import ast
import sys

import pytest
from conftest import REPO

FORBIDDEN = ("torch", "rasterio", "numpy", "osgeo", "groundbreak", "fiona", "shapely", "pyproj", "geopandas")
ALLOWED_TOP = {"qgis"}


def plugin_sources():
    return sorted((REPO / "plugin").rglob("*.py"))


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            yield node.lineno, "__import__(dynamic)"
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            yield node.lineno, "importlib.import_module(dynamic)"


def test_plugin_has_sources():
    names = {p.name for p in plugin_sources()}
    assert {"__init__.py", "protocol.py", "plugin.py", "dock.py"} <= names


@pytest.mark.parametrize("path", plugin_sources(), ids=lambda p: p.name)
def test_plugin_imports_only_stdlib_qgis_and_itself(path):
    bad = []
    for line, module in imported_modules(path):
        top = module.split(".")[0]
        if top in FORBIDDEN or not (top in ALLOWED_TOP or top in sys.stdlib_module_names):
            bad.append("%s:%d imports %s" % (path.name, line, module))
    assert not bad, "plugin must import only the stdlib, qgis.* and itself: " + "; ".join(bad)


def test_scanner_catches_forbidden_imports(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import numpy as np\nfrom osgeo import gdal\nfrom groundbreak import cli\nimport json\n")
    found = [m for _, m in imported_modules(sample)]
    assert found == ["numpy", "osgeo", "groundbreak", "json"]
    assert [m for m in found if m.split(".")[0] in FORBIDDEN] == ["numpy", "osgeo", "groundbreak"]
