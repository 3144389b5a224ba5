"""Review (next/previous, confirm/reject stored in the GeoPackage, shortcuts) and label export."""

from __future__ import annotations

import subprocess

import pytest
from conftest import FAKE_ENGINE
from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication

from plugin.review import CONFIRMED, REJECTED, ReviewError, ReviewSession, export_labels


@pytest.fixture
def gpkg(tmp_path, fake_engine):
    """A run output written by the fake engine: 6 detections with scores 0.55..0.97."""
    out = tmp_path / "run.gpkg"
    # stdin stays open until the stream ends: closing it means cancel, for the engine and the fake
    proc = subprocess.Popen([str(FAKE_ENGINE), "-m", "groundbreak", "run", "--aoi", "a.gpkg", "--scenes", "s.tif",
                             "--out", str(out), "--events", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert b'"status":"ok"' in proc.stdout.read()
    proc.stdin.close()
    assert proc.wait() == 0
    return str(out)


def detections(path):
    layer = QgsVectorLayer("%s|layername=detections" % path, "detections", "ogr")
    assert layer.isValid()
    return layer


def test_steps_through_detections_highest_score_first(gpkg):
    session = ReviewSession(detections(gpkg))
    assert len(session) == 6
    scores = [session.current["score"]]
    for _ in range(6):  # one past the end stays on the last
        scores.append(session.next()["score"])
    assert scores[:6] == sorted(scores[:6], reverse=True) and scores[0] == pytest.approx(0.97)
    assert scores[6] == scores[5]
    assert session.previous()["score"] == scores[4]


def test_marks_are_stored_in_the_geopackage(gpkg):
    session = ReviewSession(detections(gpkg))
    first = session.current.id()
    session.mark(CONFIRMED)
    second = session.current.id()
    session.mark(REJECTED)
    assert session.counts() == {CONFIRMED: 1, REJECTED: 1, "": 4}
    reopened = {f.id(): f["review"] for f in detections(gpkg).getFeatures()}
    assert reopened[first] == CONFIRMED and reopened[second] == REJECTED
    assert sorted(reopened.values()) == ["", "", "", "", CONFIRMED, REJECTED]
    with pytest.raises(ReviewError):
        session.mark("maybe")


def test_export_writes_train_labels(gpkg, tmp_path):
    layer = detections(gpkg)
    session = ReviewSession(layer)
    with pytest.raises(ReviewError, match="no reviewed detections"):
        export_labels(layer, str(tmp_path / "labels.gpkg"))
    session.mark(CONFIRMED)
    session.mark(REJECTED)
    session.mark(CONFIRMED)
    n = export_labels(layer, str(tmp_path / "labels.gpkg"))
    assert n == 3
    labels = QgsVectorLayer(str(tmp_path / "labels.gpkg") + "|layername=labels", "labels", "ogr")
    assert labels.isValid() and labels.featureCount() == 3
    assert [f.name() for f in labels.fields()][-5:] == ["label", "date", "chip_id", "scene_id", "source"]
    rows = sorted((f["label"], f["source"], f["date"]) for f in labels.getFeatures())
    assert [r[0] for r in rows] == [0, 1, 1] and {r[1] for r in rows} == {"review"}
    assert all(len(r[2]) == 10 and r[2][4] == "-" for r in rows)
    assert labels.crs().authid() == "EPSG:32614"
    assert all(f.geometry().area() == pytest.approx(512 * 512) for f in labels.getFeatures())


def test_a_layer_without_review_field_is_refused():
    layer = QgsVectorLayer("Polygon?crs=EPSG:32614&field=score:double", "x", "memory")
    with pytest.raises(ReviewError, match="no 'review' field"):
        ReviewSession(layer)


def test_dock_review_buttons_and_keyboard_shortcuts(gpkg, qgis_iface, qtbot):
    from plugin.dock import GroundbreakDock

    dock = GroundbreakDock(qgis_iface)
    qtbot.addWidget(dock)
    assert not dock.confirm_button.isEnabled()
    layer = detections(gpkg)
    dock.start_review(layer)
    assert dock.confirm_button.isEnabled() and "1 / 6" in dock.review_label.text()
    dock.confirm_button.click()
    assert "2 / 6" in dock.review_label.text() and "confirmed 1" in dock.review_label.text()
    dock.show()
    dock.activateWindow()
    dock.review_label.setFocus()
    QApplication.processEvents()
    QTest.keyClick(dock.review_label, Qt.Key_R)
    QTest.keyClick(dock.review_label, Qt.Key_P)
    QTest.keyClick(dock.review_label, Qt.Key_N)
    QTest.keyClick(dock.review_label, Qt.Key_N)
    assert "4 / 6" in dock.review_label.text() and "rejected 1" in dock.review_label.text()
    dock.export(str(gpkg).replace("run.gpkg", "labels.gpkg"))
    assert sorted(f["review"] for f in detections(gpkg).getFeatures())[-2:] == [CONFIRMED, REJECTED]
    dock.shutdown()
