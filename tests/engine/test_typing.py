"""House rules the linters do not check: public functions are typed, no logging is configured at
import, and ruff and mypy pass (they run here, so the README's test command runs them)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "engine" / "groundbreak"


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node, node.name
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield item, "%s.%s" % (node.name, item.name)


def _untyped(func: ast.FunctionDef) -> list:
    args = func.args.posonlyargs + func.args.args + func.args.kwonlyargs
    missing = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
    for extra in (func.args.vararg, func.args.kwarg):
        if extra is not None and extra.annotation is None:
            missing.append("*" + extra.arg)
    if func.returns is None:
        missing.append("return")
    return missing


def test_public_functions_are_typed():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func, name in _public_functions(tree):
            missing = _untyped(func)
            if missing:
                problems.append("%s:%d %s (%s)" % (path.relative_to(ROOT), func.lineno, name, ", ".join(missing)))
    assert not problems, "public functions without type annotations:\n" + "\n".join(problems)


def _null_handler(call: ast.Call) -> bool:
    """``addHandler(logging.NullHandler())``: what the logging HOWTO asks of libraries (it configures nothing)."""
    return call.func.attr == "addHandler" and bool(call.args) and "NullHandler" in ast.unparse(call.args[0])  # type: ignore[attr-defined]


def test_no_module_configures_logging_at_import():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: the CLI configures logging inside a function
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                        call.func.attr in ("basicConfig", "addHandler", "setLevel") and \
                        not isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not _null_handler(call):
                    offenders.append("%s:%d" % (path.relative_to(ROOT), call.lineno))
    assert not offenders, offenders


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("%s is not installed in the engine's environment (scripts/setup_engine.sh installs it)" % name)
    return found


def test_ruff_passes():
    done = subprocess.run([_tool("ruff"), "check", "engine", "tests", "bench", "scripts", "plugin"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_passes():
    done = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
