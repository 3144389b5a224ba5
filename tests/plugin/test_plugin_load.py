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
        assert {a.name() for a in provider.algorithms()} == {"detect", "plan"}
        assert QgsApplication.processingRegistry().algorithmById("groundbreak:detect") is not None
    finally:
        instance.unload()
    assert QgsApplication.processingRegistry().providerById("groundbreak") is None
    assert instance.dock is None
