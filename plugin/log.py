"""The Groundbreak tab of QGIS's log panel (engine stderr, garbage lines, error details)."""

from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

TAG = "Groundbreak"


def info(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Info)


def warning(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Warning)


def critical(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Critical)
