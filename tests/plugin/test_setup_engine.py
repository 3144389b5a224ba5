"""'Set up engine': the plan (torch pinned, OpenVINO extra), pip's progress in words, the extra index
probed once (a refused port stands in for an unreachable index), and a failed set-up that leaves the
engine in use untouched. The steps run for real (venv, pip, the status probe) on a tiny stand-in wheel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import tiny_wheel
from conftest import RECORDED, REPO
from qgis_helpers import SettingsSandbox, clear_messages, message_texts

from plugin import settings
from plugin.pip_progress import PipProgress, parse_size
from plugin.setup_engine import STEPS, TORCH_PIN, EngineSetup, SetupError, SetupPlan, plan_setup

BASE_PYTHON = "/usr/bin/python3"


@pytest.fixture
def refused_index():
    """An index URL on a local port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield "http://127.0.0.1:%d/simple" % sock.getsockname()[1]
    sock.close()


def test_plan_pins_torch_and_installs_the_engine_with_openvino(tmp_path):
    plan = plan_setup(str(tmp_path), python="/usr/bin/python3.11", source="/x/groundbreak-0.1.0-py3-none-any.whl",
                      extra_index="https://example.invalid/cpu")
    assert os.path.dirname(plan.venv_dir) == str(tmp_path) and os.path.basename(plan.venv_dir).startswith("engine-")
    install = plan.pip_install(True)
    assert install[:4] == [plan.python, "-m", "pip", "install"]
    assert TORCH_PIN == "torch==2.13.0" and TORCH_PIN in install
    assert not any(a.startswith("torch") and a != TORCH_PIN for a in install)
    assert install[-1] == "/x/groundbreak-0.1.0-py3-none-any.whl[fast]"
    assert install[install.index("--extra-index-url") + 1] == "https://example.invalid/cpu"
    assert "--extra-index-url" not in plan.pip_install(False)  # the index did not answer


def test_no_python_is_a_clear_error(tmp_path, monkeypatch):
    import plugin.setup_engine as setup

    monkeypatch.setattr(setup, "base_python", lambda: None)
    with pytest.raises(SetupError, match="no Python"):
        plan_setup(str(tmp_path), source="/x.whl")


def test_pip_output_becomes_counted_steps():
    progress = PipProgress(total=74)
    lines = (RECORDED / "pip_install.log").read_text().splitlines()
    texts = [progress.describe() for line in lines if progress.feed(line)]
    assert any("fetching packages: 1 of 74" in t for t in texts), texts[:5]
    assert any(t.startswith("installing ") and "packages" in t for t in texts)
    assert progress.done and texts[-1].startswith("installed ")
    assert not any("is ignored" in t for t in texts)  # pip's configuration noise is not progress
    assert parse_size("190.4 MB") == 190400000 and parse_size("12 kB") == 12000


def run_setup(instance, plan, qtbot, timeout=300000):
    instance.setup_engine(plan)
    with qtbot.waitSignal(instance.setup.finished, timeout=timeout) as done:
        pass
    return done.args


def test_unreachable_index_falls_back_at_once_and_setup_succeeds(qgis_iface, qtbot, tmp_path, refused_index):
    import plugin

    sandbox = SettingsSandbox()
    sandbox.set(interpreter="")
    clear_messages(qgis_iface)
    wheel = tiny_wheel.build(tmp_path / "wheel")
    plan = SetupPlan(base_python=BASE_PYTHON, venv_dir=str(tmp_path / "engine-new"), source=str(wheel),
                     extra_index=refused_index, packages=())
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    steps = []
    try:
        instance.setup_engine(plan)
        instance.setup.step_started.connect(lambda i, n, title: steps.append(title))
        with qtbot.waitSignal(instance.setup.finished, timeout=300000) as done:
            pass
        ok, message = done.args
        setup = instance.setup
        assert ok, message + "\n" + "\n".join(setup.log_lines[-20:])
        assert steps == list(STEPS[1:])  # the first step started before we connected
        probe_s = dict(setup.seconds)[STEPS[0]]
        assert probe_s < plan.probe_timeout_s + 1.5, probe_s  # refused: no waiting for pip's retries
        assert "does not answer" in setup.index_note and "refused" in setup.index_note.lower(), setup.index_note
        assert "pip's default index" in message
        pip_calls = [line for line in setup.log_lines if line.startswith("$ ") and " pip install " in line]
        assert len(pip_calls) == 2 and not any(refused_index in line for line in pip_calls)
        assert settings.load().interpreter == plan.python
        dialog = instance.setup_dialog
        assert dialog.ok and "✓" in dialog.step_labels[-1].text() and "engine ready" in dialog.result_label.text()
        dialog.log_button.click()  # the full log, one click away
        assert dialog.log_view.isVisibleTo(dialog) and "pip install" in dialog.log_view.toPlainText()
        # the dock re-checks the engine at once (no restart, no Load)
        qtbot.waitUntil(lambda: "groundbreak 0.0.1" in instance.dock.engine_label.text(), timeout=30000)
        assert any("engine ready" in t for t in message_texts(qgis_iface))
    finally:
        instance.unload()
        sandbox.restore()


def test_a_failed_setup_says_what_failed_and_keeps_the_old_engine(qgis_iface, qtbot, tmp_path, fake_engine):
    from qgis.core import Qgis

    import plugin

    sandbox = SettingsSandbox()
    sandbox.set(interpreter=fake_engine)
    clear_messages(qgis_iface)
    plan = SetupPlan(base_python=BASE_PYTHON, venv_dir=str(tmp_path / "engine-new"),
                     source=str(tmp_path / "groundbreak-9.9.9-py3-none-any.whl"), extra_index=None, packages=())
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        ok, message = run_setup(instance, plan, qtbot)
        assert not ok
        assert "Working out what to install" in message and "groundbreak-9.9.9" in message, message
        assert "Hint:" in message and "unchanged" in message
        assert not os.path.exists(plan.venv_dir)  # no half-made environment left behind
        assert settings.load().interpreter == fake_engine
        assert any("Working out what to install" in t for t in message_texts(qgis_iface, Qgis.Critical))
        assert "✗" in instance.setup_dialog.step_labels[2].text()
        assert "Working out what to install" in instance.dock.last_message
        # the engine from before still answers
        with qtbot.waitSignal(instance.dock.engine_checked, timeout=30000) as checked:
            instance.dock.refresh_engine()
        assert checked.args[0] is not None and "Engine ready" in instance.dock.engine_label.text()
    finally:
        instance.unload()
        sandbox.restore()


def test_cancel_removes_the_new_environment(qgis_app, qtbot, tmp_path):
    plan = SetupPlan(base_python=BASE_PYTHON, venv_dir=str(tmp_path / "engine-new"),
                     source=str(tiny_wheel.build(tmp_path / "wheel")), extra_index=None, packages=())
    runner = EngineSetup(plan)
    runner.step_started.connect(lambda i, n, title: runner.cancel() if i == 1 else None)
    with qtbot.waitSignal(runner.finished, timeout=120000) as done:
        runner.start()
    assert done.args[0] is False and "cancelled" in done.args[1]
    assert not os.path.exists(plan.venv_dir)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GROUNDBREAK_TEST_ENGINE_SETUP") != "1",
                    reason="installs torch, OpenVINO and the engine into a new venv (~2 min): "
                           "set GROUNDBREAK_TEST_ENGINE_SETUP=1")
@pytest.mark.parametrize("kind", ["full", "inference"])
def test_real_setup_from_the_built_zip_gives_a_working_engine(qgis_app, qtbot, tmp_path, refused_index, kind):
    """The zip's engine wheel + torch==2.13.0 + OpenVINO into a fresh venv, the extra index unreachable;
    or the inference-only engine (OpenVINO, no torch), which must still run the bundled default model."""
    from plugin.setup_engine import EngineKind

    sys.path.insert(0, str(REPO / "scripts"))
    import build_plugin

    zip_path = build_plugin.build(tmp_path / "dist", engine=True)
    with zipfile.ZipFile(zip_path) as zf:
        wheel = [n for n in zf.namelist() if n.startswith("groundbreak/engine/") and n.endswith(".whl")]
        assert len(wheel) == 1
        zf.extract(wheel[0], tmp_path / "unzipped")
    plan = plan_setup(str(tmp_path / "engines"), python=BASE_PYTHON, source=str(tmp_path / "unzipped" / wheel[0]),
                      extra_index=refused_index, kind=EngineKind(kind))
    runner = EngineSetup(plan)
    t0 = time.monotonic()
    with qtbot.waitSignal(runner.finished, timeout=1200000) as done:
        runner.start()
    seconds = time.monotonic() - t0
    (REPO / "artifacts" / "plugin").mkdir(parents=True, exist_ok=True)
    (REPO / "artifacts" / "plugin" / ("setup-log-%s.txt" % kind)).write_text(
        "total %.1f s\n%s\n\n%s" % (seconds, runner.seconds, "\n".join(runner.log_lines)))
    assert done.args[0], done.args[1] + "\n" + "\n".join(runner.log_lines[-30:])
    if kind == "inference":
        assert '"torch": null' in runner.engine_status and '"openvino": "' in runner.engine_status
        _run_bundled_model_without_torch(plan.python, tmp_path)
        return
    check = subprocess.run([plan.python, "-c", "import torch, openvino, groundbreak; print(torch.__version__)"],
                           capture_output=True, timeout=300)
    assert check.returncode == 0 and check.stdout.decode().startswith("2.13.0"), check.stderr.decode()[-2000:]
    assert '"openvino": "' in runner.engine_status


def test_inference_only_plan_installs_openvino_without_torch_or_its_index(tmp_path):
    from plugin.setup_engine import KINDS, EngineKind

    plan = plan_setup(str(tmp_path), python="/usr/bin/python3.11", source="/x/groundbreak-0.1.0-py3-none-any.whl",
                      extra_index="https://example.invalid/cpu", kind=EngineKind.INFERENCE)
    install = plan.pip_install(True)
    assert install[-1] == "/x/groundbreak-0.1.0-py3-none-any.whl[openvino]"
    assert not any(a.startswith("torch") for a in install)
    assert plan.extra_index is None and "--extra-index-url" not in install  # nothing to probe
    assert "MB" in KINDS[EngineKind.INFERENCE].size and "GB" in KINDS[EngineKind.FULL].size


def test_the_choice_dialog_shows_both_engines_with_sizes_and_defaults_to_full(qgis_app, qtbot):
    from qgis.PyQt.QtCore import Qt

    from plugin.setup_dialog import SetupChoiceDialog
    from plugin.setup_engine import KINDS, EngineKind

    dialog = SetupChoiceDialog()
    qtbot.addWidget(dialog)
    texts = {k: b.text() for k, b in dialog.buttons.items()}
    for kind, info in KINDS.items():
        assert info.size in texts[kind]
    assert dialog.kind == EngineKind.FULL
    dialog.show()
    dialog.buttons[EngineKind.INFERENCE].setFocus()
    qtbot.keyClick(dialog.buttons[EngineKind.INFERENCE], Qt.Key_Space)  # keyboard-reachable
    assert dialog.kind == EngineKind.INFERENCE


def test_an_inference_only_engine_is_described_as_such_not_as_broken():
    from plugin.engine_status import describe_status

    text = describe_status({"groundbreak": "0.1.0", "openvino": "2025.1", "torch": None}, "")
    assert "inference only" in text and "runs will fail" not in text
    broken = describe_status({"groundbreak": "0.1.0", "openvino": None, "torch": None}, "")
    assert "runs will fail" in broken


def _run_bundled_model_without_torch(python: str, tmp_path) -> None:
    """``groundbreak run`` with the default model on a generated 2 m scene, torch absent from the venv."""
    import json

    # the scene is written by the new engine's Python (QGIS's has no rasterio), with the engine tests' fixture
    scene = str(tmp_path / "s_20240501.tif")
    subprocess.run([python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "from scene_fixtures import write_raster; "
                    "write_raster(sys.argv[2], width=768, height=768, dtype='uint16', tiled=True)",
                    str(REPO / "tests" / "engine"), scene], check=True, timeout=120)
    x0, y1 = 485_900.0, 5_209_250.0  # scene_fixtures.ORIGIN, in UTM14
    UTM14 = "EPSG:32614"
    ring = [[x0 + 20, y1 - 20], [x0 + 1500, y1 - 20], [x0 + 1500, y1 - 1500], [x0 + 20, y1 - 1500], [x0 + 20, y1 - 20]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": UTM14}},
                               "features": [{"type": "Feature", "properties": {},
                                             "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    out = tmp_path / "run.gpkg"
    done = subprocess.run([python, "-m", "groundbreak", "run", "--aoi", str(aoi), "--scenes", scene, "--out", str(out),
                           "--model", str(REPO / "resources" / "models" / "groundbreak-demo")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.exists() and "openvino-int8" in done.stderr + done.stdout, done.stderr[-3000:]
