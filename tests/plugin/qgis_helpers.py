"""Helpers for tests that run inside QGIS (pytest-qgis)."""

from __future__ import annotations

from qgis.core import QgsSettings

KEYS = ("interpreter", "threads", "price_per_hour", "batch_size", "min_valid", "model_dir")


class SettingsSandbox:
    """Sets groundbreak/* settings for one test and restores what was there."""

    def __init__(self) -> None:
        self.settings = QgsSettings()
        self.saved = {k: self.settings.value("groundbreak/" + k) for k in KEYS}

    def set(self, **values) -> None:
        for key, value in values.items():
            self.settings.setValue("groundbreak/" + key, value)

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                self.settings.remove("groundbreak/" + key)
            else:
                self.settings.setValue("groundbreak/" + key, value)


def message_texts(iface, level=None) -> list:
    """Texts pushed to the message bar (pytest-qgis's mock bar records them by level)."""
    bar = iface.messageBar()
    if hasattr(bar, "messages"):
        levels = [level] if level is not None else list(bar.messages)
        return [text for lv in levels for text in bar.messages[lv]]
    return [item.text() for item in bar.items()]


def clear_messages(iface) -> None:
    bar = iface.messageBar()
    if hasattr(bar, "clear_messages"):
        bar.clear_messages()
    else:
        bar.clearWidgets()
