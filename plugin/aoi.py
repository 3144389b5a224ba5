"""AOIs: area in km² and the temporary vector file the engine reads them from."""

from __future__ import annotations

from typing import Iterable, List, Sequence

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .errors import PluginError


class AoiError(PluginError):
    """An AOI that cannot be used (no polygons, not writable)."""


def polygons(geometries: Iterable[QgsGeometry]) -> List[QgsGeometry]:
    """Valid, non-empty polygon geometries (made valid when they self-intersect)."""
    out = []
    for geom in geometries:
        if geom is None or geom.isEmpty() or geom.type() != QgsWkbTypes.PolygonGeometry:
            continue
        if not geom.isGeosValid():
            geom = geom.makeValid()
        if not geom.isEmpty():
            out.append(QgsGeometry(geom))
    return out


def area_km2(geometries: Sequence[QgsGeometry], crs: QgsCoordinateReferenceSystem) -> float:
    """Ellipsoidal area of the union (overlapping AOIs are counted once, as the engine does)."""
    geoms = polygons(geometries)
    if not geoms:
        return 0.0
    union = QgsGeometry.unaryUnion(geoms) if len(geoms) > 1 else geoms[0]
    calc = QgsDistanceArea()
    calc.setSourceCrs(crs, QgsProject.instance().transformContext())
    calc.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    return calc.measureArea(union) / 1e6


def layer_geometries(layer: QgsVectorLayer, selected_only: bool = False) -> List[QgsGeometry]:
    if layer is None or layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise AoiError("the AOI layer must be a polygon layer", "pick a polygon layer or draw an AOI")
    features = layer.getSelectedFeatures() if selected_only else layer.getFeatures()
    geoms = polygons(f.geometry() for f in features)
    if not geoms:
        what = "selected features" if selected_only else "features"
        raise AoiError("the layer %r has no polygon %s" % (layer.name(), what),
                       "select at least one polygon, or use all features")
    return geoms


def write_aoi_file(geometries: Sequence[QgsGeometry], crs: QgsCoordinateReferenceSystem, path: str) -> str:
    """Writes the AOIs (with their CRS) to a GeoPackage layer ``aoi`` with an ``aoi_id`` field."""
    geoms = polygons(geometries)
    if not geoms:
        raise AoiError("no AOI polygon to write", "draw an AOI on the map or pick a polygon layer")
    if not crs.isValid():
        raise AoiError("the AOI has no valid CRS", "set the project's or the layer's CRS")
    fields = QgsFields()
    fields.append(QgsField("aoi_id", QVariant.String))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "aoi"
    writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.MultiPolygon, crs,
                                        QgsCoordinateTransformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise AoiError("could not write the AOI file %s: %s" % (path, writer.errorMessage()),
                       "check that the temporary folder is writable")
    for i, geom in enumerate(geoms, start=1):
        feature = QgsFeature(fields)
        multi = QgsGeometry(geom)
        multi.convertToMultiType()
        feature.setGeometry(multi)
        feature.setAttribute("aoi_id", "aoi-%d" % i)
        writer.addFeature(feature)
    del writer  # flushes and closes the file
    return path
