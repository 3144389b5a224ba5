"""The plugin loads into QGIS (pytest-qgis iface), registers its provider and unloads cleanly."""

from __future__ import annotations

from qgis.core import QgsApplication

import plugin


def test_plugin_loads_registers_provider_and_unloads(qgis_iface):
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        assert instance.dock is not None and instance.dock.objectName() == "GroundbreakDock"
        texts = [a.text() for a in instance.actions]
        assert "Set up engine…" in texts and "Settings…" in texts and "Draw AOI polygon" in texts
        provider = QgsApplication.processingRegistry().providerById("groundbreak")
        assert provider is not None
        assert {a.name() for a in provider.algorithms()} == {"detect", "plan", "timeline"}
        assert QgsApplication.processingRegistry().algorithmById("groundbreak:detect") is not None
    finally:
        instance.unload()
    assert QgsApplication.processingRegistry().providerById("groundbreak") is None
    assert instance.dock is None


def test_unload_during_a_run_stops_the_engine(qgis_iface, qgis_new_project, fake_engine, monkeypatch, qtbot, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsRectangle
    from qgis_helpers import SettingsSandbox

    sandbox = SettingsSandbox()
    sandbox.set(interpreter=fake_engine)
    monkeypatch.setenv("GB_FAKE_DELAY", "0.5")
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        dock = instance.dock
        dock.set_aoi([QgsGeometry.fromRect(QgsRectangle(500000, 5205000, 502000, 5207000))],
                     QgsCoordinateReferenceSystem("EPSG:32614"))
        dock.add_scenes(["x.tif"])
        dock.output_edit.setText(str(tmp_path / "run.gpkg"))
        dock.run()
        qtbot.waitUntil(lambda: dock.engine.state.features_received > 0, timeout=20000)
        engine = dock.engine
        assert engine.running
    finally:
        instance.unload()
        sandbox.restore()
    assert not engine.running
