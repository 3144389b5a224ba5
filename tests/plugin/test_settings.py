"""Settings (dialog round trip, interpreter resolution) and the Set up engine action's wiring."""

from __future__ import annotations

import sys

from qgis_helpers import SettingsSandbox, clear_messages, message_texts

import plugin
from plugin import settings
from plugin.settings_dialog import SettingsDialog
from plugin.setup_engine import Step


def test_dialog_saves_what_the_user_entered(qgis_app):
    sandbox = SettingsSandbox()
    try:
        sandbox.set(interpreter="", threads=2, batch_size=32, min_valid=0.5, price_per_hour=0.1, runtime="")
        dialog = SettingsDialog()
        assert dialog.threads_spin.value() == 2 and dialog.runtime_combo.currentText() == "auto"
        dialog.interpreter_edit.setText("/opt/engine/bin/python")
        dialog.threads_spin.setValue(4)
        dialog.batch_spin.setValue(8)
        dialog.min_valid_spin.setValue(0.25)
        dialog.price_spin.setValue(0.5)
        dialog.runtime_combo.setCurrentText("eager")
        dialog.accept()
        values = settings.load()
        assert (values.interpreter, values.threads, values.batch_size, values.min_valid, values.price_per_hour,
                values.runtime) == ("/opt/engine/bin/python", 4, 8, 0.25, 0.5, "eager")
    finally:
        sandbox.restore()


def test_interpreter_falls_back_to_env_then_default_never_sys_executable(qgis_app, monkeypatch):
    monkeypatch.setenv("GROUNDBREAK_ENGINE_PYTHON", "/from/env/python")
    assert settings.EngineSettings(interpreter="/chosen").effective_interpreter == "/chosen"
    assert settings.EngineSettings().effective_interpreter == "/from/env/python"
    monkeypatch.delenv("GROUNDBREAK_ENGINE_PYTHON")
    assert settings.EngineSettings().effective_interpreter != sys.executable


def test_set_up_engine_reports_success_and_saves_the_interpreter(qgis_iface, qtbot, monkeypatch, tmp_path):
    import plugin.setup_engine as setup

    sandbox = SettingsSandbox()
    monkeypatch.setattr(settings, "engine_venv_dir", lambda: str(tmp_path / "venv"))
    monkeypatch.setattr(setup, "plan_steps", lambda venv: [Step("one", (sys.executable, "-c", "print('ok')"))])
    clear_messages(qgis_iface)
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        instance.setup_engine()
        with qtbot.waitSignal(instance.setup.finished, timeout=30000):
            pass
        assert settings.load().interpreter == str(tmp_path / "venv" / "bin" / "python")
        assert any("engine ready" in t for t in message_texts(qgis_iface))
    finally:
        instance.unload()
        sandbox.restore()


def test_set_up_engine_failure_is_reported_with_the_step(qgis_iface, qtbot, monkeypatch, tmp_path):
    from qgis.core import Qgis

    import plugin.setup_engine as setup

    sandbox = SettingsSandbox()
    sandbox.set(interpreter="/kept/python")
    monkeypatch.setattr(settings, "engine_venv_dir", lambda: str(tmp_path / "venv"))
    monkeypatch.setattr(setup, "plan_steps", lambda venv: [
        Step("Installing torch", (sys.executable, "-c", "import sys; print('No matching distribution'); sys.exit(1)"))])
    clear_messages(qgis_iface)
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        instance.setup_engine()
        with qtbot.waitSignal(instance.setup.finished, timeout=30000):
            pass
        texts = message_texts(qgis_iface, Qgis.Critical)
        assert any("Installing torch" in t and "No matching distribution" in t for t in texts), texts
        assert settings.load().interpreter == "/kept/python"
    finally:
        instance.unload()
        sandbox.restore()
