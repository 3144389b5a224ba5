"""Settings: the dialog round trip (runtimes from names.py) and interpreter resolution."""

from __future__ import annotations

import sys

from qgis_helpers import SettingsSandbox

from plugin import settings
from plugin.settings_dialog import SettingsDialog


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


def test_runtime_choices_are_the_engines(qgis_app):
    from plugin import names

    dialog = SettingsDialog()
    offered = [dialog.runtime_combo.itemText(i) for i in range(dialog.runtime_combo.count())]
    assert offered == list(names.RUNTIME_CHOICES) and "openvino-bf16" in offered
