"""Review: step through a run's detections, mark each confirmed or rejected (stored in the run's
GeoPackage ``review`` field), and export reviewed detections as ``groundbreak train`` labels."""

from __future__ import annotations

from typing import List, Optional

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .errors import PluginError

CONFIRMED = "confirmed"
REJECTED = "rejected"
UNREVIEWED = ""
LABEL_VALUES = {CONFIRMED: 1, REJECTED: 0}


class ReviewError(PluginError):
    """A review step that cannot be done (no layer, not writable)."""


class ReviewSession:
    """A cursor over a detections layer, highest score first."""

    def __init__(self, layer: QgsVectorLayer) -> None:
        if layer is None or not layer.isValid():
            raise ReviewError("no detections layer to review", "finish a run or load a run's GeoPackage")
        if layer.fields().indexOf("review") < 0:
            raise ReviewError("layer %r has no 'review' field" % layer.name(),
                              "review the 'detections' layer of a Groundbreak GeoPackage")
        self.layer = layer
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        request.setSubsetOfAttributes(["score"], layer.fields())
        scored = [(f["score"] if f["score"] is not None else 0.0, f.id()) for f in layer.getFeatures(request)]
        self.ids: List[int] = [fid for _, fid in sorted(scored, key=lambda s: (-float(s[0] or 0), s[1]))]
        self.index = 0 if self.ids else -1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def current(self) -> Optional[QgsFeature]:
        if self.index < 0:
            return None
        return self.layer.getFeature(self.ids[self.index])

    def next(self) -> Optional[QgsFeature]:
        if self.ids:
            self.index = min(self.index + 1, len(self.ids) - 1)
        return self.current

    def previous(self) -> Optional[QgsFeature]:
        if self.ids:
            self.index = max(self.index - 1, 0)
        return self.current

    def mark(self, value: str, advance: bool = True) -> None:
        """Stores the review of the current detection at once (in the GeoPackage for a run output)."""
        if value not in (CONFIRMED, REJECTED, UNREVIEWED):
            raise ReviewError("unknown review value %r" % value, "use confirmed, rejected or empty")
        feature = self.current
        if feature is None:
            raise ReviewError("nothing to review", "this run has no detections")
        index = self.layer.fields().indexOf("review")
        if self.layer.isEditable():
            self.layer.changeAttributeValue(feature.id(), index, value)
        elif not self.layer.dataProvider().changeAttributeValues({feature.id(): {index: value}}):
            raise ReviewError("could not store the review in %s" % self.layer.source(),
                              "check that the GeoPackage is writable and not open elsewhere")
        self.layer.triggerRepaint()
        if advance:
            self.next()

    def counts(self) -> dict:
        out = {CONFIRMED: 0, REJECTED: 0, UNREVIEWED: 0}
        for feature in self.layer.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)):
            value = feature["review"] or UNREVIEWED
            out[value if value in out else UNREVIEWED] += 1
        return out


def label_fields() -> QgsFields:
    fields = QgsFields()
    fields.append(QgsField("label", QVariant.Int))
    for name in ("date", "chip_id", "scene_id", "source"):
        fields.append(QgsField(name, QVariant.String))
    return fields


def export_labels(layer: QgsVectorLayer, path: str) -> int:
    """Writes reviewed detections to ``path`` as layer ``labels`` (label 1 confirmed, 0 rejected)."""
    fields = label_fields()
    rows = []
    for feature in layer.getFeatures():
        value = feature["review"]
        if value not in LABEL_VALUES:
            continue
        out = QgsFeature(fields)
        out.setGeometry(feature.geometry())
        out.setAttributes([LABEL_VALUES[value], feature["date"], feature["chip_id"], feature["scene_id"], "review"])
        rows.append(out)
    if not rows:
        raise ReviewError("no reviewed detections to export", "mark some detections confirmed or rejected first")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "labels"
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
    import os

    if not os.path.exists(path):
        options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
    writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.Polygon, layer.crs(),
                                        QgsCoordinateTransformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise ReviewError("could not write labels to %s: %s" % (path, writer.errorMessage()),
                          "choose a writable location")
    for row in rows:
        writer.addFeature(row)
    del writer
    return len(rows)
