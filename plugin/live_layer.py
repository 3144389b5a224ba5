"""Detections on the map: a memory layer that grows while the engine streams features, replaced by
the run's GeoPackage when the run ends. Both are styled by score and are temporal by date."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPointXY,
    QgsProject,
    QgsVectorLayer,
    QgsVectorLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QVariant

from . import log, names
from .resources import resource_path

GROUP = "Groundbreak runs"
#: The engine's detection properties, then the review mark the plugin adds.
FIELDS = names.DETECTION_PROPERTIES + ("review",)
NUMERIC_FIELDS = ("score",)


def detection_fields() -> QgsFields:
    fields = QgsFields()
    for name in FIELDS:
        fields.append(QgsField(name, QVariant.Double if name in NUMERIC_FIELDS else QVariant.String))
    return fields


def geometry_from_geojson(geometry: Dict[str, Any]) -> Optional[QgsGeometry]:
    """Polygon / MultiPolygon GeoJSON -> QgsGeometry; None for anything else or malformed input."""
    try:
        kind = geometry.get("type")
        coords: Any = geometry.get("coordinates")
        if kind == "Polygon":
            return QgsGeometry.fromPolygonXY([_ring(r) for r in coords])
        if kind == "MultiPolygon":
            return QgsGeometry.fromMultiPolygonXY([[_ring(r) for r in poly] for poly in coords])
    except (TypeError, ValueError, AttributeError, IndexError):
        return None
    return None


def _ring(ring) -> List[QgsPointXY]:
    return [QgsPointXY(float(p[0]), float(p[1])) for p in ring]


def style_detections(layer: QgsVectorLayer) -> None:
    qml = resource_path("styles", "detections.qml")
    if qml:
        message, ok = layer.loadNamedStyle(qml, categories=QgsMapLayer.Symbology)
        if not ok:
            log.warning("could not load the detections style %s: %s" % (qml, message))
    set_temporal(layer)


def activity_layer(gpkg_path: str) -> Optional[QgsVectorLayer]:
    """The run's ``activity`` layer (active 32 m cells inside each detected chip), outlined in
    magenta above the detections; None for outputs that have no such layer."""
    layer = QgsVectorLayer("%s|layername=activity" % gpkg_path, "active cells", "ogr")
    if not layer.isValid():
        return None
    symbol = QgsFillSymbol.createSimple({"color": "255,0,255,40", "outline_color": "255,0,255,255",
                                         "outline_width": "0.5"})
    layer.renderer().setSymbol(symbol)
    set_temporal(layer)
    return layer


def set_temporal(layer: QgsVectorLayer) -> None:
    """Each detection is active for its date (the GeoPackage stores dates as YYYY-MM-DD text)."""
    props = layer.temporalProperties()
    props.setMode(QgsVectorLayerTemporalProperties.ModeFeatureDateTimeStartAndEndFromExpressions)
    props.setStartExpression('to_datetime("date")')
    props.setEndExpression('to_datetime("date") + make_interval(days:=1)')
    props.setIsActive(True)


def run_group(project: QgsProject, run_name: str) -> QgsLayerTreeGroup:
    root = project.layerTreeRoot()
    parent = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
    return parent.findGroup(run_name) or parent.insertGroup(0, run_name)


class LiveDetections:
    """One run's detections on the map."""

    def __init__(self, run_name: str, project: Optional[QgsProject] = None) -> None:
        self.project = project or QgsProject.instance()
        self.run_name = run_name
        self.layers: Dict[str, QgsVectorLayer] = {}  # by CRS: AOIs in several UTM zones give several layers
        self.output_layer: Optional[QgsVectorLayer] = None
        self.activity_layer: Optional[QgsVectorLayer] = None
        self.count = 0
        self.skipped = 0

    @property
    def group(self) -> QgsLayerTreeGroup:
        return run_group(self.project, self.run_name)

    def layer_for(self, crs: str) -> QgsVectorLayer:
        layer = self.layers.get(crs)
        if layer is None:
            name = "detections (live)" if not self.layers else "detections (live, %s)" % crs
            layer = QgsVectorLayer("Polygon?crs=%s" % crs, name, "memory")
            layer.dataProvider().addAttributes(detection_fields().toList())
            layer.updateFields()
            if not layer.crs().isValid():
                layer.setCrs(QgsCoordinateReferenceSystem(crs))
            style_detections(layer)
            self.project.addMapLayer(layer, False)
            self.group.addLayer(layer)
            self.layers[crs] = layer
        return layer

    def add(self, crs: str, features: List[Dict[str, Any]]) -> int:
        """Adds a batch straight to the provider (no edit session) and repaints; returns how many."""
        layer = self.layer_for(crs)
        fields = layer.fields()
        batch = []
        for feature in features:
            geom = geometry_from_geojson(feature.get("geometry") or {})
            if geom is None or geom.isEmpty():
                self.skipped += 1
                continue
            out = QgsFeature(fields)
            out.setGeometry(geom)
            props = feature.get("properties") or {}
            for name in names.DETECTION_PROPERTIES:
                value = props.get(name)
                if name in NUMERIC_FIELDS:
                    try:
                        out.setAttribute(name, float(value))  # type: ignore[arg-type]  # None -> TypeError
                    except (TypeError, ValueError):
                        out.setAttribute(name, None)
                else:
                    out.setAttribute(name, "" if value is None else str(value))
            out.setAttribute("review", "")
            batch.append(out)
        if batch:
            layer.dataProvider().addFeatures(batch)
            layer.updateExtents()
            layer.triggerRepaint()
        self.count += len(batch)
        return len(batch)

    def replace_with_output(self, gpkg_path: str) -> Optional[QgsVectorLayer]:
        """Shows the run's GeoPackage instead of the live layer (which is removed only when it loads)."""
        layer = QgsVectorLayer("%s|layername=detections" % gpkg_path, "detections", "ogr")
        if not layer.isValid():
            log.warning("could not open the run output %s; keeping the live layer" % gpkg_path)
            return None
        style_detections(layer)
        self.project.addMapLayer(layer, False)
        self.group.insertLayer(0, layer)
        activity = activity_layer(gpkg_path)
        if activity is not None:
            self.project.addMapLayer(activity, False)
            self.group.insertLayer(0, activity)
        self.activity_layer = activity
        for live in self.layers.values():
            self.project.removeMapLayer(live.id())
        self.layers.clear()
        self.output_layer = layer
        return layer
