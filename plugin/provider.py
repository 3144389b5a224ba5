"""The ``groundbreak`` Processing provider (Toolbox, Modeler, qgis_process)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .resources import icon_path


class GroundbreakProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "groundbreak"

    def name(self) -> str:
        return "Groundbreak"

    def longName(self) -> str:  # noqa: N802
        return "Groundbreak construction detection (local engine)"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:  # noqa: N802
        from .algorithms import DetectAlgorithm, PlanAlgorithm, TimelineAlgorithm

        self.addAlgorithm(DetectAlgorithm())
        self.addAlgorithm(PlanAlgorithm())
        self.addAlgorithm(TimelineAlgorithm())
