"""'Set up engine': the steps it plans (torch always pinned) and how it reports progress and failure."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO
from plugin.request import RequestError
from plugin.setup_engine import TORCH_PIN, EngineSetup, Step, plan_steps


def test_steps_create_a_venv_and_install_a_pinned_torch_with_the_engine(tmp_path):
    steps = plan_steps(str(tmp_path / "venv"), python="/usr/bin/python3.11", source="/x/groundbreak-0.1.0.whl",
                       extra_index="https://example.invalid/cpu")
    assert steps[0].argv == ("/usr/bin/python3.11", "-m", "venv", str(tmp_path / "venv"))
    install = steps[1].argv
    assert install[0] == str(tmp_path / "venv" / "bin" / "python") and install[1:4] == ("-m", "pip", "install")
    assert TORCH_PIN == "torch==2.13.0" and TORCH_PIN in install
    assert not any(a == "torch" or (a.startswith("torch") and a != TORCH_PIN) for a in install)
    assert install[-1] == "/x/groundbreak-0.1.0.whl"
    assert "--extra-index-url" in install
    assert steps[2].argv[-3:] == ("-m", "groundbreak", "--help")


def test_a_checkout_installs_from_the_repository(tmp_path):
    steps = plan_steps(str(tmp_path / "venv"), python="/usr/bin/python3", extra_index=None)
    assert steps[1].argv[-1] == str(REPO)  # no wheel next to plugin/ in a checkout
    assert "--extra-index-url" not in steps[1].argv


def test_no_python_is_a_clear_error(tmp_path, monkeypatch):
    import plugin.setup_engine as setup

    monkeypatch.setattr(setup, "base_python", lambda: None)
    with pytest.raises(RequestError, match="no Python"):
        plan_steps(str(tmp_path / "venv"), source="/x.whl")


def test_runner_reports_each_step_and_the_failing_one(qgis_app, qtbot, tmp_path):
    steps = [Step("first", (sys.executable, "-c", "print('hello from step 1')")),
             Step("second (fails)", (sys.executable, "-c", "import sys; print('no space left'); sys.exit(3)")),
             Step("never", (sys.executable, "-c", "open(%r, 'w')" % str(tmp_path / "ran")))]
    runner = EngineSetup(steps)
    started, lines = [], []
    runner.step_started.connect(lambda i, n, title: started.append((i, n, title)))
    runner.output.connect(lines.append)
    with qtbot.waitSignal(runner.finished, timeout=30000) as done:
        runner.start()
    ok, message = done.args
    assert not ok
    assert started == [(0, 3, "first"), (1, 3, "second (fails)")]
    assert "hello from step 1" in lines
    assert "second (fails)" in message and "exit code 3" in message and "no space left" in message
    assert not (tmp_path / "ran").exists()


def test_runner_reports_an_interpreter_that_cannot_start(qgis_app, qtbot, tmp_path):
    runner = EngineSetup([Step("create venv", (str(tmp_path / "nope"), "-m", "venv", "x"))])
    with qtbot.waitSignal(runner.finished, timeout=30000) as done:
        runner.start()
    assert done.args[0] is False and "could not start" in done.args[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3.11"), reason="needs a system Python 3.11")
@pytest.mark.skipif(os.environ.get("GROUNDBREAK_TEST_ENGINE_SETUP") != "1",
                    reason="installs torch and the engine into a new venv (~2 min): set GROUNDBREAK_TEST_ENGINE_SETUP=1")
def test_real_setup_from_the_built_zip_gives_a_working_engine(qgis_app, qtbot, tmp_path):
    """The zip's engine wheel + torch==2.13.0 into a fresh venv, through pip's configured indexes."""
    sys.path.insert(0, str(REPO / "scripts"))
    import build_plugin

    zip_path = build_plugin.build(tmp_path / "dist", engine=True)
    with zipfile.ZipFile(zip_path) as zf:
        wheel = [n for n in zf.namelist() if n.startswith("groundbreak/engine/") and n.endswith(".whl")]
        assert len(wheel) == 1
        zf.extract(wheel[0], tmp_path / "unzipped")
    venv = tmp_path / "engine-venv"
    steps = plan_steps(str(venv), python="/usr/bin/python3.11", source=str(tmp_path / "unzipped" / wheel[0]),
                       extra_index=os.environ.get("GROUNDBREAK_TORCH_INDEX") or None)
    runner = EngineSetup(steps)
    with qtbot.waitSignal(runner.finished, timeout=1200000) as done:
        runner.start()
    assert done.args[0], done.args[1] + "\n" + "\n".join(runner.log_lines[-30:])
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch, groundbreak; print(torch.__version__)"],
                           capture_output=True, timeout=300)
    assert check.returncode == 0 and check.stdout.decode().startswith("2.13.0")
