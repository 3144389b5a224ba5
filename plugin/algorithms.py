"""Processing algorithms ``groundbreak:detect`` and ``groundbreak:plan``.

Each drives the engine as a blocking child process bound to the algorithm's feedback: progress
events move the progress bar, Cancel sends the protocol's cancel message (then terminate, then kill).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import aoi as aoi_mod
from . import blocking, request, settings
from .resources import icon_path
from .scenes import format_error
from .summary import describe_plan


class _EngineAlgorithm(QgsProcessingAlgorithm):
    AOI = "AOI"
    SCENES = "SCENES"
    SCENE_FILES = "SCENE_FILES"
    MODEL = "MODEL"
    MIN_VALID = "MIN_VALID"
    BATCH_SIZE = "BATCH_SIZE"
    THREADS = "THREADS"
    PRICE_PER_HOUR = "PRICE_PER_HOUR"
    ENGINE_PYTHON = "ENGINE_PYTHON"

    def group(self) -> str:
        return "Detection"

    def groupId(self) -> str:  # noqa: N802
        return "detection"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def _add_inputs(self) -> None:
        s = settings.load()
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, "Area of interest", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.SCENES, "Scenes (raster layers)", QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.SCENE_FILES, "More scenes: files, globs or STAC JSON (separated by ';')", optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model package folder (empty: the default model)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_VALID, "Minimum valid fraction of a chip", QgsProcessingParameterNumber.Double,
            defaultValue=s.min_valid, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer, defaultValue=s.batch_size,
            minValue=1))
        advanced = [
            QgsProcessingParameterNumber(self.THREADS, "Threads", QgsProcessingParameterNumber.Integer,
                                         defaultValue=s.threads, minValue=1),
            QgsProcessingParameterNumber(self.PRICE_PER_HOUR, "Price per hour (USD)",
                                         QgsProcessingParameterNumber.Double, defaultValue=s.price_per_hour,
                                         minValue=0.0),
            QgsProcessingParameterString(self.ENGINE_PYTHON, "Engine Python (empty: from settings)", optional=True),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)

    def _request(self, parameters, context, feedback, out: Optional[str] = None) -> Tuple[str, request.RunRequest]:
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is None:
            raise QgsProcessingException("the AOI input is missing or unreadable")
        geoms = [f.geometry() for f in source.getFeatures()]
        workdir = tempfile.mkdtemp(prefix="groundbreak-alg-")
        try:
            aoi_path = aoi_mod.write_aoi_file(geoms, source.sourceCrs(), os.path.join(workdir, "aoi.gpkg"))
        except aoi_mod.AoiError as exc:
            raise QgsProcessingException("%s. %s" % (exc.message, exc.hint)) from exc
        scenes: List[str] = []
        for layer in self.parameterAsLayerList(parameters, self.SCENES, context) or []:
            scenes.append(layer.source().split("|")[0])
        extra = self.parameterAsString(parameters, self.SCENE_FILES, context) or ""
        scenes += [p.strip() for p in extra.split(";") if p.strip()]
        model = self.parameterAsFile(parameters, self.MODEL, context) or settings.load().model_dir or None
        interpreter = (self.parameterAsString(parameters, self.ENGINE_PYTHON, context)
                       or settings.load().effective_interpreter)
        req = request.RunRequest(
            aois=(aoi_path,), scenes=tuple(scenes), out=out, model=model,
            min_valid=self.parameterAsDouble(parameters, self.MIN_VALID, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            threads=self.parameterAsInt(parameters, self.THREADS, context),
            price_per_hour=self.parameterAsDouble(parameters, self.PRICE_PER_HOUR, context),
            aoi_id_field="aoi_id", runtime=settings.load().runtime or None,
        )
        return interpreter, req

    def _drive(self, interpreter: str, args: List[str], feedback):
        def on_event(event) -> None:
            if event.type == "progress" and event.get("total"):
                feedback.setProgress(100.0 * event.get("done") / event.get("total"))
            elif event.type == "stage":
                feedback.pushInfo("%s: %s" % (event.get("stage"), event.get("message")))
            elif event.type == "warning":
                feedback.pushWarning("%s (%s)" % (event.get("message"), event.get("hint")))
            elif event.type == "error":
                feedback.reportError(format_error("engine error", event.data))  # every problem, each hint
            elif event.type == "features":
                feedback.pushInfo("%d detections received" % len(event.get("features") or []))

        try:
            request.engine_argv(interpreter, args)
        except request.RequestError as exc:
            raise QgsProcessingException("%s. Hint: %s" % (exc.message, exc.hint)) from exc
        feedback.pushInfo("engine: %s" % " ".join(request.engine_argv(interpreter, args)))
        status, state, failure = blocking.run_events(
            interpreter, args, is_canceled=feedback.isCanceled, on_event=on_event,
            on_stderr=lambda line: feedback.pushDebugInfo(line),
            on_garbage=lambda msg: feedback.pushWarning("ignored a malformed engine line: " + msg))
        if status == "failed":
            message, hint = failure or ("the engine failed", "")
            raise QgsProcessingException("%s. Hint: %s" % (message, hint))
        return status, state


class DetectAlgorithm(_EngineAlgorithm):
    OUTPUT = "OUTPUT"
    OUTPUT_GPKG = "OUTPUT_GPKG"
    STATUS = "STATUS"
    DETECTIONS = "DETECTIONS"

    def name(self) -> str:
        return "detect"

    def displayName(self) -> str:  # noqa: N802
        return "Detect construction activity"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Runs the local Groundbreak engine over the AOI and scenes and returns detections (one polygon per "
                "chip and date, with score, date and provenance). Cancel stops the engine after its current batch "
                "and keeps what was written. The engine runs in its own Python environment (Groundbreak settings).")

    def createInstance(self):  # noqa: N802
        return DetectAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self._add_inputs()
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_GPKG, "Engine GeoPackage (detections, chips, runs)"))
        self.addOutput(QgsProcessingOutputString(self.STATUS, "Run status"))
        self.addOutput(QgsProcessingOutputNumber(self.DETECTIONS, "Number of detections"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        gpkg = os.path.join(tempfile.mkdtemp(prefix="groundbreak-run-"), "detections.gpkg")
        interpreter, req = self._request(parameters, context, feedback, out=gpkg)
        try:
            args = request.run_args(req, "run")
        except request.RequestError as exc:
            raise QgsProcessingException("%s. Hint: %s" % (exc.message, exc.hint)) from exc
        status, state = self._drive(interpreter, args, feedback)
        out = ((state.result or {}).get("outputs") or {}).get("gpkg") or gpkg
        layer = QgsVectorLayer("%s|layername=detections" % out, "detections", "ogr")
        if not layer.isValid():
            raise QgsProcessingException(
                "the engine finished (%s) but its output %s has no detections layer" % (status, out))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, layer.fields(), layer.wkbType(),
                                             layer.crs())
        if sink is None:
            raise QgsProcessingException("could not create the detections output")
        count = 0
        for feature in layer.getFeatures():
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
            count += 1
        feedback.pushInfo("run %s: %d detections (%s)" % (status, count, state.summary()))
        if status == "cancelled":
            feedback.pushWarning("the run was cancelled; these are the detections written before it stopped")
        return {self.OUTPUT: dest_id, self.OUTPUT_GPKG: out, self.STATUS: status, self.DETECTIONS: count}


class PlanAlgorithm(_EngineAlgorithm):
    def name(self) -> str:
        return "plan"

    def displayName(self) -> str:  # noqa: N802
        return "Plan a detection run (chips, time, cost)"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Asks the engine how many chips the AOI and scenes give, how many masks will drop, and the expected "
                "time and cost, without running the model.")

    def createInstance(self):  # noqa: N802
        return PlanAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self._add_inputs()
        for name, title in (("AOI_KM2", "AOI area (km²)"), ("CHIPS_PLANNED", "Chips planned"),
                            ("CHIPS_EXPECTED_INFERRED", "Chips expected to be inferred"),
                            ("EXPECTED_SECONDS", "Expected seconds"), ("RUN_USD", "Expected cost (USD)"),
                            ("PER_KM2_USD", "Expected cost per km² (USD)")):
            self.addOutput(QgsProcessingOutputNumber(name, title))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Plan summary"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        interpreter, req = self._request(parameters, context, feedback)
        try:
            args = request.run_args(req, "plan")
        except request.RequestError as exc:
            raise QgsProcessingException("%s. Hint: %s" % (exc.message, exc.hint)) from exc
        status, state = self._drive(interpreter, args, feedback)
        result = state.result or {}
        stats, cost = result.get("stats") or {}, result.get("cost") or {}
        summary = describe_plan(result)
        feedback.pushInfo(summary)
        return {
            "AOI_KM2": stats.get("aoi_km2"), "CHIPS_PLANNED": stats.get("chips_planned"),
            "CHIPS_EXPECTED_INFERRED": stats.get("chips_expected_inferred"),
            "EXPECTED_SECONDS": stats.get("expected_seconds"), "RUN_USD": cost.get("run_usd"),
            "PER_KM2_USD": cost.get("per_km2_usd"), "SUMMARY": summary,
        }
