"""Groundbreak QGIS plugin: find heavy construction activity with the local Groundbreak engine.

Only the standard library, ``qgis.*``, ``qgis.PyQt.*`` and this package are imported here; the
engine (torch, rasterio, numpy wheels) runs in its own virtualenv as a separate process.
"""


def classFactory(iface):  # noqa: N802 (QGIS entry point name)
    from .plugin import GroundbreakPlugin

    return GroundbreakPlugin(iface)
