"""The worker environment and deployment files: CPU-only and one source of truth for the install."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def _requirements(path: Path):
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def test_the_worker_requirements_are_cpu_only_pinned_and_without_dev_tools():
    for name in ("requirements-worker.in", "requirements-worker.txt"):
        reqs = _requirements(DEPLOY / name)
        assert reqs, name
        names = {re.split(r"[=<>!~\[ ]", r, maxsplit=1)[0].lower() for r in reqs}
        assert all("==" in r for r in reqs), "%s: every requirement pinned" % name
        assert "torch==2.13.0+cpu" in reqs, "%s: the CPU build of torch" % name
        assert not {n for n in names if n.startswith(("nvidia", "cuda", "triton"))}, name
        assert not names & {"pytest", "ruff", "mypy", "matplotlib", "jupyter", "ipython"}, name
    locked = {r.split("==")[0].lower() for r in _requirements(DEPLOY / "requirements-worker.txt")}
    top = {r.split("==")[0].lower() for r in _requirements(DEPLOY / "requirements-worker.in")}
    assert top <= locked, "the lock holds every top-level requirement"


def test_the_dockerfile_installs_that_same_file():
    text = (DEPLOY / "Dockerfile").read_text()
    installs = [line for line in text.splitlines() if line.startswith("RUN") and "pip install" in line]
    assert any("-r /opt/groundbreak/requirements-worker.txt" in line for line in installs)
    assert "COPY deploy/requirements-worker.txt /opt/groundbreak/requirements-worker.txt" in text
    # The engine itself adds no dependency of its own on top of the lock.
    assert all("-r " in line or "--no-deps" in line for line in installs)
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)


def _dag_tasks(tree: ast.Module):
    tasks, edges = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if getattr(func, "id", None) == "BashOperator":
                kw = {k.arg: k.value for k in node.value.keywords}
                tasks[node.targets[0].id] = (ast.literal_eval(kw["task_id"]), ast.unparse(kw["bash_command"]))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.BinOp):
            chain, value = [], node.value
            while isinstance(value, ast.BinOp) and isinstance(value.op, ast.RShift):
                chain.insert(0, value.right.id)
                value = value.left
            chain.insert(0, value.id)
            edges.extend(zip(chain, chain[1:]))
    return tasks, edges


def test_the_airflow_dag_plans_runs_and_aggregates_in_that_order():
    path = DEPLOY / "airflow" / "groundbreak_fleet_dag.py"
    tasks, edges = _dag_tasks(ast.parse(path.read_text()))
    ids = {var: task_id for var, (task_id, _) in tasks.items()}
    assert [(ids[a], ids[b]) for a, b in edges] == [("plan", "run"), ("run", "aggregate")]
    commands = {task_id: cmd for task_id, cmd in tasks.values()}
    assert "groundbreak fleet plan" in commands["plan"] and "--ledger" in commands["plan"]
    assert "groundbreak fleet run" in commands["run"] and "--scheduler" in commands["run"]
    assert "groundbreak fleet aggregate" in commands["aggregate"]


@pytest.mark.skipif(not os.environ.get("GROUNDBREAK_AIRFLOW_PYTHON"),
                    reason="set GROUNDBREAK_AIRFLOW_PYTHON to a Python with apache-airflow to load the DAG")
def test_airflow_loads_the_dag(tmp_path):
    code = ("import sys; from airflow.models import DagBag; b = DagBag(sys.argv[1]); "
            "assert not b.import_errors, b.import_errors; d = b.dags['groundbreak_fleet']; "
            "print(sorted((t.task_id, sorted(t.downstream_task_ids)) for t in d.tasks))")
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.pop("PYTHONPATH", None)
    out = subprocess.run([os.environ["GROUNDBREAK_AIRFLOW_PYTHON"], "-c", code, str(DEPLOY / "airflow")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[('aggregate', []), ('plan', ['run']), ('run', ['aggregate'])]" in out.stdout


@pytest.mark.skipif(not os.environ.get("GROUNDBREAK_TEST_WORKER_ENV"),
                    reason="set GROUNDBREAK_TEST_WORKER_ENV=1 to build the worker environment in a fresh venv")
def test_the_worker_environment_installs_and_runs_a_unit(tmp_path):
    out = subprocess.run(["bash", str(DEPLOY / "lock_worker_env.sh"), str(tmp_path / "venv"), str(tmp_path / "lock")],
                         capture_output=True,
                         text=True, timeout=1800, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                                  if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker environment ran a fleet unit" in out.stdout
    locked = {r.split("==")[0].lower() for r in _requirements(tmp_path / "lock")}
    assert locked == {r.split("==")[0].lower() for r in _requirements(DEPLOY / "requirements-worker.txt")}
