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


def message_texts(iface) -> list:
    bar = iface.messageBar()
    return [item.text() for item in bar.items()]
