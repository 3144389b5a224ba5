"""The dock workflow in QGIS (offscreen) against the fake engine replaying recorded streams."""

from __future__ import annotations

import re

import pytest
from conftest import RECORDED
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsRuleBasedRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
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
    assert "2014-07-20" in texts[0] and "R,G,B,NIR" in texts[0] and "2.0 m" in texts[0]


def test_folder_adds_its_rasters(dock, qtbot, tmp_path):
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_folder(str(tmp_path))
    assert sorted(e.name for e in dock.entries) == ["a_20140720.tif", "b_20150926.tif"]
    assert dock.scene_paths() == [str(tmp_path)]  # the folder itself: the engine's discovery decides


def test_model_card_says_demo(dock, qtbot):
    with qtbot.waitSignal(dock.model_finished, timeout=20000):
        dock.load_model()
    assert "DEMO" in dock.model_label.text() and "R,G,B,NIR" in dock.model_label.text()
    assert "red,green,blue,nir" in dock.model_label.toolTip()  # the full card


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
    assert [layer.name() for layer in layers] == ["detections"]
    out = layers[0].layer()
    assert out.providerType() == "ogr" and str(tmp_path / "out" / "run.gpkg") in out.source()
    assert out.featureCount() == 6
    assert out.crs().authid() == "EPSG:32614"
    assert isinstance(out.renderer(), QgsRuleBasedRenderer)
    assert out.temporalProperties().isActive()
    assert dock.progress.value() == 100
    assert dock.stage_label.text().startswith("ok: ") and "6 detections" in dock.stage_label.text()
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
    expected = _json.loads([line for line in lines if '"type":"result"' in line][0])["stats"]["detections"]
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
    from qgis.core import QgsDateTimeRange, QgsExpression, QgsFeatureRequest, QgsVectorLayerTemporalContext
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
    assert "could not be read" in dock.scene_list.item(0).text()
    assert "no engine interpreter configured" in dock.last_message
    assert any("no engine interpreter configured" in t for t in message_texts(dock.iface, Qgis.Warning))


# ---------------------------------------------------------------- the analyst's first hour (issue 11)
def scene_texts(dock):
    return [dock.scene_list.item(i).text() for i in range(dock.scene_list.count())]


def test_a_folder_with_sidecar_masks_lists_only_scenes(dock, qtbot, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in ("a_20140720.tif", "a_20140720_mask.tif", "b_20150926.tif", "b_20150926_mask.tif"):
        (folder / name).write_bytes(b"")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_folder(str(folder))
    assert [e.name for e in dock.entries] == ["a_20140720.tif", "b_20150926.tif"]
    assert not any("mask" in t for t in scene_texts(dock))
    assert "Skipped 2 files" in dock.skipped_label.text() and "sidecar mask" in dock.skipped_label.toolTip()


def test_wrong_bands_and_resolution_show_before_plan(dock, qtbot, tmp_path):
    bad = tmp_path / "x_rgb300.tif"
    bad.write_bytes(b"")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / "a_20140720.tif"), str(bad)])
    texts = scene_texts(dock)
    assert "3 problems" in texts[1] and "problem" not in texts[0], texts
    assert "300.0 m" in texts[1] and "no date" in texts[1]
    detail = dock.scene_detail
    assert dock.message_view.isVisibleTo(dock) and detail in dock.message_view.toPlainText()
    assert "needs [red, green, blue, nir]" in detail and "300 m pixels" in detail and "Hint: " in detail, detail
    assert detail.index("needs [red") < detail.index("300 m pixels")  # bands first
    assert "1 cannot be used" in dock.scenes_summary and "1 cannot be used" in dock.scenes_box.title()
    assert "problems" in dock.scene_list.item(1).toolTip() or "Cannot be used" in dock.scene_list.item(1).toolTip()


def test_remove_several_scenes_at_once_and_clear(dock, qtbot, tmp_path):
    names = ["s%d_2014072%d.tif" % (i, i) for i in range(4)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / n) for n in names])
    assert dock.scene_list.count() == 4
    dock.scene_list.item(0).setSelected(True)
    dock.scene_list.item(2).setSelected(True)
    dock.remove_scene_button.click()
    assert [e.name for e in dock.entries] == [names[1], names[3]]
    assert dock.scene_paths() == [str(tmp_path / names[1]), str(tmp_path / names[3])]
    dock.clear_scenes_button.click()
    assert dock.scene_list.count() == 0 and dock.scene_paths() == []


def test_removing_one_scene_of_a_folder_keeps_the_rest(dock, qtbot, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in ("a_20140720.tif", "b_20150926.tif", "c_20160101.tif"):
        (folder / name).write_bytes(b"")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_folder(str(folder))
    dock.scene_list.item(1).setSelected(True)
    dock.remove_selected_scenes()
    assert dock.scene_paths() == [str(folder / "a_20140720.tif"), str(folder / "c_20160101.tif")]


def test_plan_reports_every_problem_with_its_hint_in_the_dock(dock, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "plan_problems.jsonl"))
    monkeypatch.setenv("GB_FAKE_EXIT", "1")
    dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    with qtbot.waitSignal(dock.plan_finished, timeout=20000) as blocker:
        dock.plan()
    assert blocker.args[0] is None
    text = dock.message_view.toPlainText()
    assert dock.message_view.isVisibleTo(dock)
    assert text.startswith("Plan failed: 3 problems"), text
    for part in ("needs [red, green, blue, nir]", "300 m pixels", "does not overlap any AOI",
                 "Hint: use 4-band R,G,B,NIR imagery or pass --band-order",
                 "Hint: use imagery near 2.00 m, or pass --allow-resample to resample it onto the 2.00 m chip grid "
                 "anyway",
                 "Hint: check the AOI or drop the scene"):
        assert part in text, (part, text)  # complete, never cut to two lines
    bar = message_texts(dock.iface, Qgis.Critical)
    assert any("and 2 more problems" in t for t in bar), bar


def test_an_engine_without_info_model_still_lists_scenes(dock, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_OLD_INFO", "1")
    dock.model_edit.setText(str(tmp_path / "model"))
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    assert "2014-07-20" in scene_texts(dock)[0]
    assert "info --model" in dock.last_message


def argv_log(tmp_path, command):
    import json as _json

    lines = (tmp_path / "argv.jsonl").read_text().splitlines()
    return [_json.loads(line)["argv"] for line in lines if _json.loads(line)["argv"][2:3] == [command]]


@pytest.mark.parametrize("choice", ["resume", "overwrite", "new file", "cancel"])
def test_an_existing_output_asks_resume_overwrite_or_new_file(dock, qtbot, tmp_path, monkeypatch, choice):
    out = tmp_path / "out" / "run.gpkg"
    out.parent.mkdir()
    out.write_bytes(b"earlier run")
    dock.output_edit.setText(str(out))
    asked = []
    dock.ask_existing_output = lambda path: asked.append(path) or choice
    stream = "run_resumed.jsonl" if choice == "resume" else "run_ok.jsonl"
    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / stream))
    dock.add_scenes([str(tmp_path / "a_20140720.tif")])
    with qtbot.waitSignal(dock.run_finished, timeout=30000) as blocker:
        dock.run()
    assert asked == [str(out)]
    if choice == "cancel":
        assert blocker.args[0] == "not started" and not (tmp_path / "argv.jsonl").exists() or not argv_log(
            tmp_path, "run")
        return
    argv = argv_log(tmp_path, "run")[-1]
    assert ("--overwrite" in argv) == (choice == "overwrite")
    written = argv[argv.index("--out") + 1]
    assert written == (str(tmp_path / "out" / "run-2.gpkg") if choice == "new file" else str(out))
    if choice == "resume":
        summary = dock.stage_label.text()
        assert "resumed: 10 chips already done, 3 new" in summary, summary
        assert "3 chips inferred" in summary
        assert "resumed 10" in dock.counts_label.text() and "inferred 3" in dock.counts_label.text()


def test_the_common_path_fits_1366x768_without_scrolling(dock, qtbot, tmp_path):
    """At 1366 x 768 QGIS leaves the right dock area about 560 px (menus, toolbars, status bar): AOI,
    four scenes, the model card, a plan and a finished run fit without a scroll bar."""
    names = ["s%d_2014072%d.tif" % (i, i) for i in range(4)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with qtbot.waitSignal(dock.info_finished, timeout=20000):
        dock.add_scenes([str(tmp_path / n) for n in names])
    with qtbot.waitSignal(dock.model_finished, timeout=20000):
        dock.load_model()
    with qtbot.waitSignal(dock.plan_finished, timeout=20000):
        dock.plan()
    assert run_and_wait(dock, qtbot) == "ok"
    dock.resize(400, 560)
    dock.show()
    qtbot.waitExposed(dock)
    qtbot.wait(200)
    scroll = dock.widget()
    assert dock.tabs.currentWidget() is dock.run_page and dock.counts_label.isVisibleTo(dock)
    assert dock.plan_button.isVisibleTo(dock) and dock.run_button.isVisibleTo(dock)
    dock.tabs.setCurrentIndex(0)  # the inputs
    qtbot.wait(100)
    assert not scroll.verticalScrollBar().isVisible(), (scroll.widget().size(), scroll.viewport().size())
    assert not scroll.verticalScrollBar().isVisible(), (scroll.widget().size(), scroll.viewport().size())
    assert scroll.widget().minimumSizeHint().width() <= 400, scroll.widget().minimumSizeHint()


def test_every_control_of_the_common_path_is_reachable_with_tab(dock, qtbot):
    dock.show()
    qtbot.waitExposed(dock)
    wanted = [dock.tabs.tabBar(), dock.draw_polygon_button, dock.aoi_layer_combo, dock.use_layer_button,
              dock.scene_list, dock.add_button, dock.remove_scene_button, dock.clear_scenes_button, dock.model_edit,
              dock.model_load_button, dock.output_edit, dock.plan_button, dock.run_button]
    seen, widget = [], dock.setup_button
    for _ in range(200):
        widget = widget.nextInFocusChain()
        if widget in wanted and widget not in seen:
            seen.append(widget)
    missing = [w.objectName() or w.__class__.__name__ for w in wanted if w not in seen]
    assert not missing, missing
    assert all(w.focusPolicy() & Qt.TabFocus for w in wanted), [w for w in wanted if not w.focusPolicy() & Qt.TabFocus]
    assert [dock.plan_button.text(), dock.run_button.text()] == ["&Plan", "&Run"]  # Alt+P, Alt+R
