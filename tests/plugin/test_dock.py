"""The dock workflow in QGIS (offscreen) against the fake engine replaying recorded streams."""

from __future__ import annotations

import re

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsRuleBasedRenderer,
    QgsVectorLayer,
)

from conftest import RECORDED
from qgis_helpers import SettingsSandbox, clear_messages, message_texts
from plugin.dock import GroundbreakDock
from plugin.live_layer import GROUP

UTM14 = QgsCoordinateReferenceSystem("EPSG:32614")


@pytest.fixture
def dock(qgis_iface, qgis_new_project, fake_engine, qtbot, tmp_path):
    sandbox = SettingsSandbox()
    sandbox.set(interpreter=fake_engine, threads=2, batch_size=8, min_valid=0.5, price_per_hour=0.1, model_dir="")
    clear_messages(qgis_iface)
    widget = GroundbreakDock(qgis_iface)
    widget.output_edit.setText(str(tmp_path / "out" / "run.gpkg"))
    widget.set_aoi([QgsGeometry.fromRect(QgsRectangle(500000, 5205000, 502000, 5207000))], UTM14, "test")
    widget.scene_list.clear()
    for name in ("a_20140720.tif", "b_20150926.tif"):
        (tmp_path / name).write_bytes(b"")
    yield widget
    widget.shutdown()
    widget.deleteLater()
    sandbox.restore()


def run_and_wait(dock, qtbot, timeout=30000):
    with qtbot.waitSignal(dock.run_finished, timeout=timeout) as blocker:
        dock.run()
    return blocker.args[0]


def test_aoi_area_is_shown_in_km2(dock):
    match = re.search(r"AOI: ([0-9.]+) km²", dock.aoi_label.text())
    assert match, dock.aoi_label.text()
    # a 2 km x 2 km square in UTM: 4 km² on the ellipsoid within the UTM scale error
    assert float(match.group(1)) == pytest.approx(4.0, abs=0.02)
    assert dock.aoi_km2 == pytest.approx(4.0, abs=0.02)


def test_aoi_from_a_layer_all_or_selected(dock):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32614", "aois", "memory")
    from qgis.core import QgsFeature

    feats = []
    for x in (500000, 510000):
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, 5205000, x + 1000, 5206000)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    dock.aoi_layer_combo.setLayer(layer)
    dock.use_aoi_layer()
    assert len(dock.aoi_geoms) == 2 and dock.aoi_km2 == pytest.approx(2.0, abs=0.01)
    layer.selectByIds([next(layer.getFeatures()).id()])
    dock.aoi_selected_check.setChecked(True)
    dock.use_aoi_layer()
    assert len(dock.aoi_geoms) == 1 and dock.aoi_km2 == pytest.approx(1.0, abs=0.01)


def test_scenes_are_listed_with_engine_info(dock, qtbot, tmp_path):
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / "a_20140720.tif"), str(tmp_path / "b_20150926.tif")])
    texts = [dock.scene_list.item(i).text() for i in range(dock.scene_list.count())]
    assert len(texts) == 2
    assert "2014-07-20" in texts[0] and "red,green,blue,nir" in texts[0] and "2.0 m" in texts[0]


def test_folder_adds_its_rasters(dock, qtbot, tmp_path):
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_folder(str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in dock.scene_paths()) == ["a_20140720.tif", "b_20150926.tif"]


def test_model_card_says_demo(dock, qtbot):
    with qtbot.waitSignal(dock.model_finished, timeout=20000):
        dock.load_model()
    assert "DEMO" in dock.model_label.text() and "red,green,blue,nir" in dock.model_label.text()


def test_plan_shows_chips_drops_time_and_cost(dock, qtbot, tmp_path):
    dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    with qtbot.waitSignal(dock.plan_finished, timeout=20000) as blocker:
        dock.plan()
    assert blocker.args[0]["stats"]["chips_planned"] == 16
    text = dock.plan_label.text()
    assert "16 chips" in text and "4.19 km²" in text and "2 nodata, 1 cloud" in text and "13 to infer" in text
    assert "$0.10/h" in text


def test_run_streams_features_before_the_end_then_shows_the_geopackage(dock, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_DELAY", "0.05")
    dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    seen, progress = [], []

    def on_event(event):
        if event.type == "features":
            # the live layer already holds this batch while the engine is still running
            seen.append((dock.live.count, dock.engine.running, dock.engine.state.status))
            progress.append(dock.progress.value())

    dock.run_button.clicked.disconnect()
    with qtbot.waitSignal(dock.run_finished, timeout=30000) as blocker:
        dock.run()
        dock.engine.received.connect(on_event)
    assert blocker.args[0] == "ok"
    assert [count for count, _, _ in seen] == [2, 3, 6]
    assert all(running and status == "" for _, running, status in seen)
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] < 100
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP)
    assert group is not None and len(group.children()) == 1
    layers = group.children()[0].findLayers()
    assert [l.name() for l in layers] == ["detections"]
    out = layers[0].layer()
    assert out.providerType() == "ogr" and str(tmp_path / "out" / "run.gpkg") in out.source()
    assert out.featureCount() == 6
    assert out.crs().authid() == "EPSG:32614"
    assert isinstance(out.renderer(), QgsRuleBasedRenderer)
    assert out.temporalProperties().isActive()
    assert dock.progress.value() == 100
    assert "ok: 6 detections" in dock.stage_label.text()
    assert dock.review_layer_combo.currentLayer() is out


def test_live_layer_is_temporal_and_styled(dock, qtbot, monkeypatch):
    monkeypatch.setenv("GB_FAKE_DELAY", "0.05")
    captured = {}

    def on_event(event):
        if event.type == "features" and not captured:
            layer = next(iter(dock.live.layers.values()))
            captured["temporal"] = layer.temporalProperties().isActive()
            captured["renderer"] = type(layer.renderer()).__name__
            captured["dates"] = {f["date"] for f in layer.getFeatures()}

    with qtbot.waitSignal(dock.run_finished, timeout=30000):
        dock.add_scenes(["x.tif"])
        dock.run()
        dock.engine.received.connect(on_event)
    assert captured == {"temporal": True, "renderer": "QgsRuleBasedRenderer", "dates": {"2014-07-20"}}


def test_engine_error_goes_to_the_message_bar_with_its_hint(dock, qtbot, monkeypatch):
    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "run_error.jsonl"))
    monkeypatch.setenv("GB_FAKE_EXIT", "1")
    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "failed"
    texts = message_texts(dock.iface, Qgis.Critical)
    assert any("model needs [red, green, blue, nir]" in t and "--band-order" in t for t in texts), texts
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_cancel_stops_within_a_batch_and_keeps_what_was_written(dock, qtbot, monkeypatch):
    monkeypatch.setenv("GB_FAKE_DELAY", "0.3")
    dock.add_scenes(["x.tif"])

    def on_event(event):
        if event.type == "features":
            dock.cancel()

    with qtbot.waitSignal(dock.run_finished, timeout=30000) as blocker:
        dock.run()
        dock.engine.received.connect(on_event)
    assert blocker.args[0] == "cancelled"
    out = dock.live.output_layer
    assert out is not None and 1 <= out.featureCount() < 6
    assert any("cancelled" in t for t in message_texts(dock.iface))


def test_engine_crash_is_reported_and_qgis_survives(dock, qtbot, monkeypatch):
    monkeypatch.setenv("GB_FAKE_CRASH", "1")
    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "failed"
    texts = message_texts(dock.iface, Qgis.Critical)
    assert any("exit code 134" in t and "simulated engine crash" in t for t in texts), texts
    # the dock is usable again
    monkeypatch.delenv("GB_FAKE_CRASH")
    assert run_and_wait(dock, qtbot) == "ok"


def test_garbage_from_the_engine_is_skipped(dock, qtbot, monkeypatch):
    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "garbage_truncated.jsonl"))
    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "failed"  # the stream ended without done
    assert dock.live.count == 1  # the valid polygon; the null-geometry feature is dropped
    assert dock.live.output_layer is None and len(dock.live.layers) == 1  # no output: the live layer stays
    assert len(dock.engine.state.garbage) == 7


def test_missing_interpreter_is_a_clear_error(dock, qtbot, tmp_path):
    SettingsSandbox().set(interpreter=str(tmp_path / "no-venv" / "bin" / "python"))
    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "failed"
    assert any("could not start the engine interpreter" in t and "Set up engine" in t
               for t in message_texts(dock.iface))


def test_run_without_scenes_is_refused_before_starting(dock, qtbot):
    assert run_and_wait(dock, qtbot) == "failed"
    assert dock.engine is None
    assert any("no scenes given" in t for t in message_texts(dock.iface))


def test_replayed_real_engine_stream(dock, qtbot, monkeypatch):
    import json as _json

    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "real_run_ok.jsonl"))
    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "ok"
    lines = (RECORDED / "real_run_ok.jsonl").read_text().splitlines()
    expected = _json.loads([l for l in lines if '"type":"result"' in l][0])["stats"]["detections"]
    assert dock.live.count == expected > 0
    assert dock.live.output_layer.featureCount() == expected


def test_a_hung_engine_is_terminated_after_cancel(dock, qtbot, monkeypatch):
    from plugin.escalation import StopPolicy, StopStep

    dock.stop_policy = StopPolicy(cancel_grace_s=0.3, terminate_grace_s=0.3)
    monkeypatch.setenv("GB_FAKE_DELAY", "0.5")
    monkeypatch.setenv("GB_FAKE_IGNORE_CANCEL", "1")
    dock.add_scenes(["x.tif"])

    def on_event(event):
        if event.type == "features":
            dock.cancel()

    with qtbot.waitSignal(dock.run_finished, timeout=30000) as blocker:
        dock.run()
        dock.engine.received.connect(on_event)
    assert blocker.args[0] == "cancelled"
    assert not dock.engine.running
    assert dock.engine.stopper.taken[:2] == [StopStep.CANCEL, StopStep.TERMINATE]
    assert dock.live.count >= 1 and dock.live.layers  # no output file: the live layer is kept


def test_temporal_filter_selects_one_date(dock, qtbot):
    from qgis.core import (QgsDateTimeRange, QgsExpression, QgsFeatureRequest,
                           QgsVectorLayerTemporalContext)
    from qgis.PyQt.QtCore import QDate, QDateTime, QTime

    dock.add_scenes(["x.tif"])
    assert run_and_wait(dock, qtbot) == "ok"
    layer = dock.live.output_layer
    context = QgsVectorLayerTemporalContext()
    context.setLayer(layer)
    counts = {}
    for day in ("2014-07-20", "2015-09-26", "2016-01-01"):
        date = QDate.fromString(day, "yyyy-MM-dd")
        frame = QgsDateTimeRange(QDateTime(date, QTime(0, 0)), QDateTime(date, QTime(23, 59, 59)))
        expression = layer.temporalProperties().createFilterString(context, frame)
        counts[day] = sum(1 for _ in layer.getFeatures(QgsFeatureRequest(QgsExpression(expression))))
    assert counts == {"2014-07-20": 3, "2015-09-26": 3, "2016-01-01": 0}


def test_model_card_loads_when_the_dock_is_first_shown(dock, qtbot):
    assert dock.model_info is None
    with qtbot.waitSignal(dock.model_finished, timeout=20000):
        dock.show()
    assert dock.model_info["demo"] is True and "DEMO" in dock.model_label.text()
    dock.hide()


def test_project_rasters_become_scenes(dock, qtbot, tmp_path):
    from osgeo import gdal, osr  # test-only: QGIS's own GDAL bindings write the fixture raster

    from qgis.core import QgsRasterLayer

    path = str(tmp_path / "scene_20140720.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 4, gdal.GDT_Byte)
    ds.SetGeoTransform((500000, 2, 0, 5207000, 0, -2))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32614)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    QgsProject.instance().addMapLayer(QgsRasterLayer(path, "scene"))
    QgsProject.instance().addMapLayer(QgsVectorLayer("Polygon?crs=EPSG:32614", "not a raster", "memory"))
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_project_rasters()
    assert dock.scene_paths() == [path]


def test_scene_info_without_an_interpreter_is_reported(dock, qtbot, monkeypatch, tmp_path):
    monkeypatch.delenv("GROUNDBREAK_ENGINE_PYTHON", raising=False)
    monkeypatch.setattr(type(dock), "interpreter", lambda self: "")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    assert "(no info)" in dock.scene_list.item(0).text()
    assert any("no engine interpreter configured" in t for t in message_texts(dock.iface, Qgis.Warning))
