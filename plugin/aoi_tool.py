"""A map tool to draw an AOI as a polygon (click vertices, right-click or double-click to finish)
or a rectangle (press, drag, release)."""

from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

POLYGON = "polygon"
RECTANGLE = "rectangle"


class AoiMapTool(QgsMapTool):
    """Emits ``aoi_drawn(QgsGeometry)`` in the canvas CRS when a shape is finished."""

    aoi_drawn = pyqtSignal(object)

    def __init__(self, canvas, mode: str = POLYGON) -> None:
        super().__init__(canvas)
        self.mode = mode
        self.points: List[QgsPointXY] = []
        self._start: Optional[QgsPointXY] = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setColor(QColor(230, 120, 0, 200))
        self.band.setFillColor(QColor(230, 120, 0, 50))
        self.band.setWidth(2)
        self.setCursor(Qt.CrossCursor)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.points = []
        self._start = None
        self.band.reset(QgsWkbTypes.PolygonGeometry)

    def canvasPressEvent(self, event) -> None:  # noqa: N802
        point = self.toMapCoordinates(event.pos())
        if self.mode == RECTANGLE:
            if event.button() == Qt.LeftButton:
                self._start = point
            return
        if event.button() == Qt.RightButton:
            self._finish_polygon()
        elif event.button() == Qt.LeftButton:
            self.points.append(point)
            self._show(self.points)

    def canvasMoveEvent(self, event) -> None:  # noqa: N802
        point = self.toMapCoordinates(event.pos())
        if self.mode == RECTANGLE:
            if self._start is not None:
                self._show(_corners(self._start, point))
        elif self.points:
            self._show(self.points + [point])

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802
        if self.mode != RECTANGLE or self._start is None or event.button() != Qt.LeftButton:
            return
        end = self.toMapCoordinates(event.pos())
        rect = QgsRectangle(self._start, end)
        self._start = None
        if rect.width() > 0 and rect.height() > 0:
            self._emit(QgsGeometry.fromRect(rect))
        else:
            self.reset()

    def canvasDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.mode == POLYGON:
            self._finish_polygon()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key_Escape:
            self.reset()
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter) and self.mode == POLYGON:
            self._finish_polygon()
        elif event.key() == Qt.Key_Backspace and self.points:
            self.points.pop()
            self._show(self.points)

    def deactivate(self) -> None:
        self.reset()
        super().deactivate()

    def _finish_polygon(self) -> None:
        # A double click also delivered its press: drop the repeated vertex.
        points = [p for i, p in enumerate(self.points) if i == 0 or p != self.points[i - 1]]
        if len(points) >= 3:
            geom = QgsGeometry.fromPolygonXY([points + [points[0]]])
            if not geom.isGeosValid():
                geom = geom.makeValid()
            if not geom.isEmpty() and geom.area() > 0:
                self._emit(geom)
                return
        self.reset()

    def _emit(self, geom: QgsGeometry) -> None:
        self.reset()
        self.aoi_drawn.emit(geom)

    def _show(self, points: List[QgsPointXY]) -> None:
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        for i, point in enumerate(points):
            self.band.addPoint(point, i == len(points) - 1)


def _corners(a: QgsPointXY, b: QgsPointXY) -> List[QgsPointXY]:
    return [a, QgsPointXY(b.x(), a.y()), b, QgsPointXY(a.x(), b.y())]
