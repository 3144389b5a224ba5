"""Processing algorithms ``groundbreak:detect``, ``groundbreak:plan`` and ``groundbreak:timeline``.

Each drives the engine as a blocking child process bound to the algorithm's feedback: progress
events move the progress bar, Cancel sends the protocol's cancel message (then terminate, then kill);
``timeline`` (a quick JSON command) is terminated on Cancel. The sites layers a run or a timeline
build adds are loaded styled (by start year, ongoing dashed) and temporal when the algorithm ends.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import aoi as aoi_mod
from . import blocking, request, settings
from . import sites as sites_mod
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


#: The timeline outputs ``detect`` (after a run over several dates) and ``timeline`` give.
SITES, OBSERVATIONS, SITE_COUNT, ONGOING = "SITES", "OBSERVATIONS", "SITE_COUNT", "ONGOING"


def add_timeline_outputs(alg: QgsProcessingAlgorithm) -> None:
    alg.addOutput(QgsProcessingOutputVectorLayer(SITES, "Sites (start and end dates)", QgsProcessing.TypeVectorPolygon))
    alg.addOutput(QgsProcessingOutputVectorLayer(OBSERVATIONS, "Site observations (one per site and date)",
                                                 QgsProcessing.TypeVectorPolygon))
    alg.addOutput(QgsProcessingOutputNumber(SITE_COUNT, "Number of sites"))
    alg.addOutput(QgsProcessingOutputNumber(ONGOING, "Sites still active at the last date"))


def timeline_results(gpkg: str, context: QgsProcessingContext, feedback) -> Dict[str, Any]:
    """The sites of ``gpkg`` as outputs (None when it has none), loaded styled into the project when
    the algorithm finishes (in the Toolbox; qgis_process has no project)."""
    layer = sites_mod.open_layer(gpkg, sites_mod.SITES_LAYER)
    if layer is None:
        return {SITES: None, OBSERVATIONS: None, SITE_COUNT: 0, ONGOING: 0}
    features = sites_mod.site_features(layer)
    ongoing = sum(1 for f in features if str(f[sites_mod.ONGOING]) == "1")
    out = {SITES: sites_mod.layer_source(gpkg, sites_mod.SITES_LAYER), OBSERVATIONS: None,
           SITE_COUNT: len(features), ONGOING: ongoing}
    if sites_mod.open_layer(gpkg, sites_mod.OBSERVATIONS_LAYER) is not None:
        out[OBSERVATIONS] = sites_mod.layer_source(gpkg, sites_mod.OBSERVATIONS_LAYER)
    project = context.project()
    for key, kind, title in ((OBSERVATIONS, sites_mod.OBSERVATIONS_LAYER, sites_mod.OBSERVATIONS_TITLE),
                             (SITES, sites_mod.SITES_LAYER, sites_mod.SITES_TITLE)):
        if out[key] and project is not None:
            details = QgsProcessingContext.LayerDetails(title, project, key)
            details.setPostProcessor(sites_mod.SiteLayerStyler.create(kind))
            context.addLayerToLoadOnCompletion(out[key], details)
    feedback.pushInfo("%s in %s" % (sites_mod.describe_sites(features), gpkg))
    return out


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
                "chip and date, with score, date and provenance). Over several dates the engine also builds sites "
                "with start and end dates (the Sites and Site observations outputs). Cancel stops the engine after "
                "its current batch and keeps what was written. The engine runs in its own Python environment "
                "(Groundbreak settings).")

    def createInstance(self):  # noqa: N802
        return DetectAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self._add_inputs()
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_GPKG, "Engine GeoPackage (detections, chips, runs)"))
        self.addOutput(QgsProcessingOutputString(self.STATUS, "Run status"))
        self.addOutput(QgsProcessingOutputNumber(self.DETECTIONS, "Number of detections"))
        add_timeline_outputs(self)

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
        result = {self.OUTPUT: dest_id, self.OUTPUT_GPKG: out, self.STATUS: status, self.DETECTIONS: count}
        result.update(timeline_results(out, context, feedback))  # a run over several dates has sites
        return result


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


class TimelineAlgorithm(_EngineAlgorithm):
    """``groundbreak timeline`` on a run's GeoPackage: sites with start and end dates."""

    INPUT = "INPUT"
    ENTER = "ENTER"
    EXIT = "EXIT"
    MIN_REVISITS = "MIN_REVISITS"
    END_REVISITS = "END_REVISITS"
    SMART = "SMART"
    SMART_FOLDER = "SMART_FOLDER"
    TIMEOUT = 3600.0

    def group(self) -> str:
        return "Activity over time"

    def groupId(self) -> str:  # noqa: N802
        return "activity"

    def name(self) -> str:
        return "timeline"

    def displayName(self) -> str:  # noqa: N802
        return "Build sites with start and end dates"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Turns a run over several dates into sites: per ground chip, the score over dates (dates where "
                "the chip was masked or not covered are unknown, never negative), activity with hysteresis (it "
                "starts at the enter threshold, continues down to the exit threshold and ends after that many "
                "low revisits), touching active chips merged. Writes the layers sites and site_observations "
                "into the run's GeoPackage (replacing earlier ones; detections are never touched) and, with a "
                "SMART folder, IARPA SMART region and site models. Empty thresholds: the run's model threshold "
                "and 0.2 below it.")

    def createInstance(self):  # noqa: N802
        return TimelineAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT, "Run GeoPackage (the output of a run over several dates)", extension="gpkg"))
        self.addParameter(QgsProcessingParameterNumber(
            self.ENTER, "Enter threshold (empty: the run's model threshold)", QgsProcessingParameterNumber.Double,
            optional=True, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.EXIT, "Exit threshold (empty: 0.2 below enter)", QgsProcessingParameterNumber.Double,
            optional=True, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_REVISITS, "Minimum revisits at or above exit (2: a one-date blip is no site)",
            QgsProcessingParameterNumber.Integer, defaultValue=2, minValue=1))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.SMART, "IARPA SMART site models folder", optional=True, createByDefault=False))
        advanced = [
            QgsProcessingParameterNumber(self.END_REVISITS, "Low revisits that end activity",
                                         QgsProcessingParameterNumber.Integer, defaultValue=2, minValue=1),
            QgsProcessingParameterString(self.ENGINE_PYTHON, "Engine Python (empty: from settings)", optional=True),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        add_timeline_outputs(self)
        self.addOutput(QgsProcessingOutputFolder(self.SMART_FOLDER, "SMART site models folder"))

    def _optional_number(self, parameters, name: str, context) -> Optional[float]:
        value = parameters.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.parameterAsDouble(parameters, name, context)

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        gpkg = self.parameterAsFile(parameters, self.INPUT, context)
        if not gpkg or not os.path.isfile(gpkg):
            raise QgsProcessingException("the run GeoPackage %r does not exist" % gpkg)
        smart = self.parameterAsString(parameters, self.SMART, context) or None
        interpreter = (self.parameterAsString(parameters, self.ENGINE_PYTHON, context)
                       or settings.load().effective_interpreter)
        try:
            args = request.timeline_args(
                gpkg, enter=self._optional_number(parameters, self.ENTER, context),
                exit_=self._optional_number(parameters, self.EXIT, context),
                min_revisits=self.parameterAsInt(parameters, self.MIN_REVISITS, context),
                end_revisits=self.parameterAsInt(parameters, self.END_REVISITS, context), smart_dir=smart)
            feedback.pushInfo("engine: %s" % " ".join(request.engine_argv(interpreter, args)))
            built = blocking.run_json(interpreter, args, timeout_s=self.TIMEOUT, is_canceled=feedback.isCanceled)
        except (request.RequestError, blocking.EngineCallError) as exc:
            raise QgsProcessingException("%s. Hint: %s" % (exc.message, exc.hint)) from exc
        params = built.get("params") or {}
        dates = built.get("dates") or []
        feedback.pushInfo("timeline over %d date(s) (%s to %s): enter %s (%s), exit %s, min %s revisit(s)" % (
            len(dates), dates[0] if dates else "-", dates[-1] if dates else "-", params.get("enter"),
            built.get("threshold_source"), params.get("exit"), params.get("min_revisits")))
        out = timeline_results(str(built.get("gpkg") or gpkg), context, feedback)
        if out[SITE_COUNT] != len(built.get("sites") or []):
            feedback.pushWarning("the engine reported %d sites, the GeoPackage has %d" % (
                len(built.get("sites") or []), out[SITE_COUNT]))
        out[self.SMART_FOLDER] = smart
        return out
