"""The AOI map tool driven by simulated mouse events on a real, visible canvas."""

from __future__ import annotations

import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsRectangle
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QEvent, QPoint, QPointF, Qt
from qgis.PyQt.QtGui import QKeyEvent, QMouseEvent
from qgis.PyQt.QtWidgets import QApplication

from plugin.aoi_tool import POLYGON, RECTANGLE, AoiMapTool


@pytest.fixture
def canvas(qgis_app):
    canvas = QgsMapCanvas()
    canvas.resize(800, 600)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32614"))
    canvas.setExtent(QgsRectangle(500000, 5200000, 508000, 5206000))
    canvas.show()
    QApplication.processEvents()
    yield canvas
    canvas.close()
    canvas.deleteLater()


def mouse(canvas, kind, x, y, button=Qt.LeftButton, buttons=None):
    buttons = button if buttons is None else buttons
    event = QMouseEvent(kind, QPointF(x, y), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(canvas.viewport(), event)


def to_map(canvas, x, y) -> QgsPointXY:
    return canvas.getCoordinateTransform().toMapCoordinates(QPoint(x, y))


def make_tool(canvas, mode):
    tool = AoiMapTool(canvas, mode)
    canvas.setMapTool(tool)
    drawn = []
    tool.aoi_drawn.connect(drawn.append)
    return tool, drawn


def test_rectangle_by_press_drag_release(canvas):
    tool, drawn = make_tool(canvas, RECTANGLE)
    mouse(canvas, QEvent.MouseButtonPress, 100, 100)
    for x, y in ((150, 150), (250, 220), (300, 250)):
        mouse(canvas, QEvent.MouseMove, x, y, Qt.NoButton, Qt.LeftButton)
    # while dragging the rubber band shows the rectangle
    assert tool.band.numberOfVertices() >= 4
    mouse(canvas, QEvent.MouseButtonRelease, 300, 250, Qt.LeftButton, Qt.NoButton)
    assert len(drawn) == 1
    box = drawn[0].boundingBox()
    a, b = to_map(canvas, 100, 100), to_map(canvas, 300, 250)
    assert box.xMinimum() == pytest.approx(min(a.x(), b.x()))
    assert box.xMaximum() == pytest.approx(max(a.x(), b.x()))
    assert box.yMinimum() == pytest.approx(min(a.y(), b.y()))
    assert box.yMaximum() == pytest.approx(max(a.y(), b.y()))
    assert drawn[0].area() == pytest.approx(abs(a.x() - b.x()) * abs(a.y() - b.y()))
    assert tool.band.numberOfVertices() == 0  # the drawing band is cleared after emitting


def test_polygon_by_clicks_and_right_click(canvas):
    tool, drawn = make_tool(canvas, POLYGON)
    pixels = [(100, 100), (400, 100), (400, 400)]
    for x, y in pixels:
        mouse(canvas, QEvent.MouseButtonPress, x, y)
        mouse(canvas, QEvent.MouseButtonRelease, x, y, Qt.LeftButton, Qt.NoButton)
    mouse(canvas, QEvent.MouseMove, 200, 300, Qt.NoButton, Qt.NoButton)
    assert not drawn
    mouse(canvas, QEvent.MouseButtonPress, 200, 300, Qt.RightButton)
    assert len(drawn) == 1
    pts = [to_map(canvas, x, y) for x, y in pixels]
    expected = abs((pts[1].x() - pts[0].x()) * (pts[2].y() - pts[0].y())) / 2  # right triangle
    assert drawn[0].area() == pytest.approx(expected, rel=1e-6)
    assert drawn[0].isGeosValid()


def test_polygon_double_click_finishes_without_a_duplicate_vertex(canvas):
    tool, drawn = make_tool(canvas, POLYGON)
    for x, y in ((100, 100), (300, 100), (300, 300), (100, 300)):
        mouse(canvas, QEvent.MouseButtonPress, x, y)
        mouse(canvas, QEvent.MouseButtonRelease, x, y, Qt.LeftButton, Qt.NoButton)
    mouse(canvas, QEvent.MouseButtonPress, 100, 300)  # the double click's own press
    mouse(canvas, QEvent.MouseButtonDblClick, 100, 300)
    assert len(drawn) == 1
    a, b = to_map(canvas, 100, 100), to_map(canvas, 300, 300)
    assert drawn[0].area() == pytest.approx(abs(a.x() - b.x()) * abs(a.y() - b.y()), rel=1e-6)


def test_escape_abandons_and_too_few_points_emit_nothing(canvas):
    tool, drawn = make_tool(canvas, POLYGON)
    for x, y in ((100, 100), (300, 100)):
        mouse(canvas, QEvent.MouseButtonPress, x, y)
    tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, Qt.Key_Escape, Qt.NoModifier))
    assert tool.points == []
    mouse(canvas, QEvent.MouseButtonPress, 100, 100)
    mouse(canvas, QEvent.MouseButtonPress, 300, 100)
    mouse(canvas, QEvent.MouseButtonPress, 300, 100, Qt.RightButton)
    assert drawn == []


def test_drawn_aoi_reaches_the_dock_with_the_canvas_crs(canvas, qgis_iface, monkeypatch):
    from plugin.dock import GroundbreakDock

    dock = GroundbreakDock(qgis_iface)
    monkeypatch.setattr(dock, "canvas", lambda: canvas)
    dock.start_drawing(RECTANGLE)
    assert canvas.mapTool() is dock.map_tool
    mouse(canvas, QEvent.MouseButtonPress, 100, 100)
    mouse(canvas, QEvent.MouseMove, 500, 400, Qt.NoButton, Qt.LeftButton)
    mouse(canvas, QEvent.MouseButtonRelease, 500, 400, Qt.LeftButton, Qt.NoButton)
    assert len(dock.aoi_geoms) == 1 and dock.aoi_crs.authid() == "EPSG:32614"
    a, b = to_map(canvas, 100, 100), to_map(canvas, 500, 400)
    planar_km2 = abs(a.x() - b.x()) * abs(a.y() - b.y()) / 1e6
    assert dock.aoi_km2 == pytest.approx(planar_km2, rel=0.01)
    assert "drawn rectangle" in dock.aoi_label.text()
    assert dock.aoi_band.numberOfVertices() >= 4  # the AOI stays visible on the map
    utm_box = dock.aoi_band.asGeometry().boundingBox()
    assert utm_box.xMinimum() == pytest.approx(min(a.x(), b.x()), abs=1e-6)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    lonlat_box = dock.aoi_band.asGeometry().boundingBox()  # redrawn in the new map CRS
    assert -100 < lonlat_box.xMinimum() < -98 and 46 < lonlat_box.yMinimum() < 48
    dock.shutdown()
