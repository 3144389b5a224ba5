"""The Groundbreak dock: AOI, scenes, model, plan, run/cancel with live detections, review."""

from __future__ import annotations

import glob
import os
import tempfile
import time
from typing import Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapLayerComboBox, QgsRubberBand
from qgis.PyQt.QtCore import QProcess, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeySequence
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QShortcut,
    QVBoxLayout,
    QWidget,
)

from . import aoi as aoi_mod
from . import log, request, settings
from .aoi_tool import POLYGON, RECTANGLE, AoiMapTool
from .engine_process import EngineProcess, JsonQuery
from .escalation import DEFAULT_POLICY, UNLOAD_POLICY
from .live_layer import LiveDetections
from .review import CONFIRMED, REJECTED, ReviewError, ReviewSession, export_labels
from .stream import overall_percent, valid_features
from .summary import describe_model, describe_plan, describe_scene, usd

SCENE_EXTENSIONS = ("*.tif", "*.tiff", "*.TIF", "*.TIFF", "*.jp2", "*.vrt", "*.img")


class GroundbreakDock(QDockWidget):
    run_finished = pyqtSignal(str)  # status
    plan_finished = pyqtSignal(object)  # result data or None
    info_finished = pyqtSignal()
    model_finished = pyqtSignal()

    def __init__(self, iface, parent=None) -> None:
        super().__init__("Groundbreak", parent)
        self.setObjectName("GroundbreakDock")
        self.iface = iface
        self.aoi_geoms: List[QgsGeometry] = []
        self.aoi_crs = QgsCoordinateReferenceSystem()
        self.aoi_source = ""
        self.scene_info: Dict[str, dict] = {}
        self.model_info: Optional[dict] = None
        self.plan_result: Optional[dict] = None
        self.engine: Optional[EngineProcess] = None
        self.planner: Optional[EngineProcess] = None
        self.live: Optional[LiveDetections] = None
        self.review: Optional[ReviewSession] = None
        self.last_status = ""
        self.last_output = ""
        self._queries: List[JsonQuery] = []
        self._workdir = tempfile.mkdtemp(prefix="groundbreak-")
        self.map_tool: Optional[AoiMapTool] = None
        self._shown_once = False
        self.aoi_band: Optional[QgsRubberBand] = None
        self.stop_policy = DEFAULT_POLICY
        self._build()

    # ---------------------------------------------------------------- UI
    def _build(self) -> None:
        body = QWidget()
        col = QVBoxLayout(body)

        box = QGroupBox("AOI")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.draw_polygon_button = QPushButton("Draw polygon")
        self.draw_rect_button = QPushButton("Draw rectangle")
        self.clear_aoi_button = QPushButton("Clear")
        for b in (self.draw_polygon_button, self.draw_rect_button, self.clear_aoi_button):
            row.addWidget(b)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.aoi_layer_combo = QgsMapLayerComboBox()
        self.aoi_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.aoi_layer_combo.setAllowEmptyLayer(True)
        self.aoi_selected_check = QCheckBox("selected only")
        self.use_layer_button = QPushButton("Use layer")
        row.addWidget(self.aoi_layer_combo, 1)
        row.addWidget(self.aoi_selected_check)
        row.addWidget(self.use_layer_button)
        lay.addLayout(row)
        self.aoi_label = QLabel("No AOI yet: draw one or pick a polygon layer.")
        self.aoi_label.setWordWrap(True)
        lay.addWidget(self.aoi_label)
        col.addWidget(box)

        box = QGroupBox("Scenes")
        lay = QVBoxLayout(box)
        self.scene_list = QListWidget()
        self.scene_list.setMinimumHeight(60)
        self.scene_list.setMaximumHeight(110)
        lay.addWidget(self.scene_list)
        row = QHBoxLayout()
        self.add_layers_button = QPushButton("Project rasters")
        self.add_files_button = QPushButton("Files…")
        self.add_folder_button = QPushButton("Folder…")
        self.add_stac_button = QPushButton("STAC…")
        self.remove_scene_button = QPushButton("Remove")
        for b in (self.add_layers_button, self.add_files_button, self.add_folder_button, self.add_stac_button,
                  self.remove_scene_button):
            row.addWidget(b)
        lay.addLayout(row)
        col.addWidget(box)

        box = QGroupBox("Model")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default model")
        self.model_browse_button = QPushButton("…")
        self.model_load_button = QPushButton("Load")
        row.addWidget(self.model_edit, 1)
        row.addWidget(self.model_browse_button)
        row.addWidget(self.model_load_button)
        lay.addLayout(row)
        self.model_label = QLabel("Model not loaded yet.")
        self.model_label.setWordWrap(True)
        lay.addWidget(self.model_label)
        col.addWidget(box)

        box = QGroupBox("Plan and run")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("output GeoPackage (default: a new file per run)")
        self.output_browse_button = QPushButton("…")
        row.addWidget(self.output_edit, 1)
        row.addWidget(self.output_browse_button)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.plan_button = QPushButton("Plan")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        for b in (self.plan_button, self.run_button, self.cancel_button):
            row.addWidget(b)
        lay.addLayout(row)
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        lay.addWidget(self.plan_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        lay.addWidget(self.stage_label)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        lay.addWidget(self.counts_label)
        col.addWidget(box)

        self.review_box = QGroupBox("Review")
        lay = QVBoxLayout(self.review_box)
        row = QHBoxLayout()
        self.review_layer_combo = QgsMapLayerComboBox()
        self.review_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.review_start_button = QPushButton("Review")
        row.addWidget(self.review_layer_combo, 1)
        row.addWidget(self.review_start_button)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.prev_button = QPushButton("◀ Prev (P)")
        self.next_button = QPushButton("Next (N) ▶")
        self.confirm_button = QPushButton("Confirm (C)")
        self.reject_button = QPushButton("Reject (R)")
        for b in (self.prev_button, self.next_button, self.confirm_button, self.reject_button):
            row.addWidget(b)
        lay.addLayout(row)
        self.review_label = QLabel("")
        self.review_label.setWordWrap(True)
        lay.addWidget(self.review_label)
        self.export_button = QPushButton("Export labels…")
        lay.addWidget(self.export_button)
        col.addWidget(self.review_box)
        col.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)

        self.draw_polygon_button.clicked.connect(lambda: self.start_drawing(POLYGON))
        self.draw_rect_button.clicked.connect(lambda: self.start_drawing(RECTANGLE))
        self.clear_aoi_button.clicked.connect(self.clear_aoi)
        self.use_layer_button.clicked.connect(self.use_aoi_layer)
        self.add_layers_button.clicked.connect(self.add_project_rasters)
        self.add_files_button.clicked.connect(self._choose_files)
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.add_stac_button.clicked.connect(self._choose_stac)
        self.remove_scene_button.clicked.connect(self.remove_selected_scenes)
        self.model_browse_button.clicked.connect(self._choose_model)
        self.model_load_button.clicked.connect(self.load_model)
        self.output_browse_button.clicked.connect(self._choose_output)
        self.plan_button.clicked.connect(self.plan)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.review_start_button.clicked.connect(lambda: self.start_review(self.review_layer_combo.currentLayer()))
        self.prev_button.clicked.connect(self.review_previous)
        self.next_button.clicked.connect(self.review_next)
        self.confirm_button.clicked.connect(lambda: self.review_mark(CONFIRMED))
        self.reject_button.clicked.connect(lambda: self.review_mark(REJECTED))
        self.export_button.clicked.connect(self._choose_export)
        # Plain-letter shortcuts only while the dock has focus, so they never steal QGIS's own keys.
        self.shortcuts = []
        for key, slot in (("C", lambda: self.review_mark(CONFIRMED)), ("R", lambda: self.review_mark(REJECTED)),
                          ("N", self.review_next), ("P", self.review_previous), ("Right", self.review_next),
                          ("Left", self.review_previous), ("Z", self.zoom_to_current)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
            self.shortcuts.append(shortcut)
        self._update_review_buttons()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        # the model card is cheap (the engine's `model` does not load torch): show it on first view
        if not self._shown_once:
            self._shown_once = True
            interpreter = self.interpreter()
            if interpreter and os.path.exists(interpreter) and self.model_info is None:
                self.load_model()

    # ---------------------------------------------------------------- helpers
    def canvas(self):
        return self.iface.mapCanvas()

    def settings(self) -> settings.EngineSettings:
        return settings.load()

    def interpreter(self) -> str:
        return self.settings().effective_interpreter

    def notify(self, message: str, hint: str = "", level=Qgis.Info, duration: int = 8) -> None:
        text = message + ("  Hint: " + hint if hint else "")
        bar = self.iface.messageBar()
        if bar is not None:
            bar.pushMessage("Groundbreak", text, level=level, duration=duration)
        (log.critical if level == Qgis.Critical else log.warning if level == Qgis.Warning else log.info)(text)

    # ---------------------------------------------------------------- AOI
    def start_drawing(self, mode: str) -> None:
        canvas = self.canvas()
        if self.map_tool is None:
            self.map_tool = AoiMapTool(canvas, mode)
            self.map_tool.aoi_drawn.connect(self._on_aoi_drawn)
        else:
            self.map_tool.set_mode(mode)
        canvas.setMapTool(self.map_tool)

    def _on_aoi_drawn(self, geom: QgsGeometry) -> None:
        self.set_aoi([geom], self.canvas().mapSettings().destinationCrs(), "drawn %s" % self.map_tool.mode)

    def use_aoi_layer(self) -> None:
        layer = self.aoi_layer_combo.currentLayer()
        try:
            geoms = aoi_mod.layer_geometries(layer, self.aoi_selected_check.isChecked())
        except aoi_mod.AoiError as exc:
            self.notify(exc.message, exc.hint, Qgis.Warning)
            return
        self.set_aoi(geoms, layer.crs(), "layer %s" % layer.name())

    def set_aoi(self, geoms: List[QgsGeometry], crs: QgsCoordinateReferenceSystem, source: str = "") -> None:
        self.aoi_geoms = aoi_mod.polygons(geoms)
        self.aoi_crs = QgsCoordinateReferenceSystem(crs)
        self.aoi_source = source
        self.plan_result = None
        self.plan_label.setText("")
        if not self.aoi_geoms:
            self.aoi_label.setText("No AOI yet: draw one or pick a polygon layer.")
            self._show_aoi()
            return
        km2 = aoi_mod.area_km2(self.aoi_geoms, self.aoi_crs)
        self.aoi_label.setText("AOI: %.2f km² (%d polygon%s, %s, %s)" % (
            km2, len(self.aoi_geoms), "" if len(self.aoi_geoms) == 1 else "s", source, self.aoi_crs.authid()))
        self._show_aoi()

    def clear_aoi(self) -> None:
        self.set_aoi([], QgsCoordinateReferenceSystem(), "")

    @property
    def aoi_km2(self) -> float:
        return aoi_mod.area_km2(self.aoi_geoms, self.aoi_crs) if self.aoi_geoms else 0.0

    def _show_aoi(self) -> None:
        canvas = self.canvas()
        if self.aoi_band is None:
            self.aoi_band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
            self.aoi_band.setColor(QColor(0, 120, 230, 220))
            self.aoi_band.setFillColor(QColor(0, 120, 230, 30))
            self.aoi_band.setWidth(2)
            # a rubber band holds map coordinates: redraw the AOI when the map's CRS changes
            canvas.destinationCrsChanged.connect(self._show_aoi)
        self.aoi_band.reset(QgsWkbTypes.PolygonGeometry)
        for geom in self.aoi_geoms:
            self.aoi_band.addGeometry(geom, self.aoi_crs)

    # ---------------------------------------------------------------- scenes
    def scene_paths(self) -> List[str]:
        return [self.scene_list.item(i).data(Qt.UserRole) for i in range(self.scene_list.count())]

    def add_scenes(self, paths: List[str]) -> None:
        known = set(self.scene_paths())
        added = []
        for path in paths:
            if path and path not in known:
                item = QListWidgetItem(os.path.basename(path) + "  (reading…)")
                item.setData(Qt.UserRole, path)
                item.setToolTip(path)
                self.scene_list.addItem(item)
                known.add(path)
                added.append(path)
        if added:
            self.refresh_scene_info()

    def add_project_rasters(self) -> None:
        paths = []
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
                path = layer.source().split("|")[0]
                if os.path.isfile(path):
                    paths.append(path)
        if not paths:
            self.notify("the project has no raster layers backed by files", "add files or a folder instead",
                        Qgis.Warning)
        self.add_scenes(paths)

    def add_folder(self, folder: str) -> None:
        paths = sorted({p for ext in SCENE_EXTENSIONS for p in glob.glob(os.path.join(folder, ext))})
        if not paths:
            self.notify("no rasters (%s) in %s" % (", ".join(SCENE_EXTENSIONS[::2]), folder), "choose another folder",
                        Qgis.Warning)
        self.add_scenes(paths)

    def remove_selected_scenes(self) -> None:
        for item in self.scene_list.selectedItems():
            self.scene_list.takeItem(self.scene_list.row(item))
        self.plan_result = None

    def refresh_scene_info(self) -> None:
        paths = self.scene_paths()
        if not paths:
            return
        query = JsonQuery(self)
        query.done.connect(lambda value, error: self._on_scene_info(query, value, error))
        self._queries.append(query)
        query.start(self.interpreter(), request.info_args(paths))

    def _on_scene_info(self, query, value, error) -> None:
        self._forget(query)
        if error:
            self.notify(error[0], error[1], Qgis.Warning)
            for i in range(self.scene_list.count()):
                item = self.scene_list.item(i)
                item.setText(os.path.basename(item.data(Qt.UserRole)) + "  (no info)")
            self.info_finished.emit()
            return
        by_path = {}
        for scene in value.get("scenes", []):
            by_path.setdefault(str(scene.get("path")), []).append(scene)
            self.scene_info[str(scene.get("path"))] = scene
        for i in range(self.scene_list.count()):
            item = self.scene_list.item(i)
            path = item.data(Qt.UserRole)
            scenes = by_path.get(path) or _match_real_path(by_path, path)
            if not scenes:
                item.setText(os.path.basename(path) + "  (STAC or unreadable: see the plan)")
                continue
            lines = [describe_scene(s) for s in scenes]
            item.setText(os.path.basename(path) + "  " + (lines[0] if len(lines) == 1 else "%d scenes" % len(lines)))
            warnings = [w for s in scenes for w in s.get("warnings", [])]
            item.setToolTip(path + "\n" + "\n".join(lines + ["warning: %s" % w for w in warnings]))
        self.info_finished.emit()

    # ---------------------------------------------------------------- model
    def load_model(self) -> None:
        query = JsonQuery(self)
        query.done.connect(lambda value, error: self._on_model(query, value, error))
        self._queries.append(query)
        query.start(self.interpreter(), request.model_args(self.model_edit.text().strip() or None))

    def _on_model(self, query, value, error) -> None:
        self._forget(query)
        if error:
            self.model_info = None
            self.model_label.setText("Model not loaded: " + error[0])
            self.notify(error[0], error[1], Qgis.Warning)
        else:
            self.model_info = value
            self.model_label.setText(describe_model(value))
        self.model_finished.emit()

    # ---------------------------------------------------------------- plan / run
    def build_request(self, command: str) -> request.RunRequest:
        if not self.aoi_geoms:
            raise request.RequestError("no AOI given", "draw an AOI on the map or pick a polygon layer")
        aoi_path = aoi_mod.write_aoi_file(
            self.aoi_geoms, self.aoi_crs, os.path.join(self._workdir, "aoi-%d.gpkg" % int(time.time() * 1000)))
        s = self.settings()
        out = None
        if command == "run":
            out = self.output_edit.text().strip() or default_output_path()
        return request.RunRequest(
            aois=(aoi_path,), scenes=tuple(self.scene_paths()), out=out,
            model=self.model_edit.text().strip() or s.model_dir or None, min_valid=s.min_valid,
            batch_size=s.batch_size, threads=s.threads, price_per_hour=s.price_per_hour, aoi_id_field="aoi_id",
            runtime=s.runtime or None,
        )

    def plan(self) -> None:
        if self.planner is not None and self.planner.running:
            return
        try:
            req = self.build_request("plan")
            args = request.run_args(req, "plan")
        except (request.RequestError, aoi_mod.AoiError) as exc:
            self.notify(exc.message, exc.hint, Qgis.Warning)
            self.plan_finished.emit(None)
            return
        self.plan_label.setText("Planning…")
        self.planner = EngineProcess(self)
        self.planner.finished.connect(self._on_plan_finished)
        try:
            self.planner.start(self.interpreter(), args)
        except request.RequestError as exc:
            self.notify(exc.message, exc.hint, Qgis.Critical)
            self.plan_label.setText("")
            self.plan_finished.emit(None)

    def _on_plan_finished(self, status: str, state) -> None:
        if status == "ok" and state.result:
            self.plan_result = state.result
            self.plan_label.setText(describe_plan(state.result))
            self.plan_finished.emit(state.result)
            return
        message, hint = self.planner.failure or ("planning ended with status %s" % status, "")
        self.plan_label.setText("Plan failed: " + message)
        self.notify(message, hint, Qgis.Critical)
        self.plan_finished.emit(None)

    def run(self) -> None:
        if self.engine is not None and self.engine.running:
            self.notify("a run is already going", "cancel it first", Qgis.Warning)
            return
        try:
            req = self.build_request("run")
            args = request.run_args(req, "run")
            interpreter = self.interpreter()
            request.engine_argv(interpreter, args)
        except (request.RequestError, aoi_mod.AoiError) as exc:
            self.notify(exc.message, exc.hint, Qgis.Warning)
            self.run_finished.emit("failed")
            return
        os.makedirs(os.path.dirname(os.path.abspath(req.out)), exist_ok=True)
        self.last_output = req.out
        run_name = "run %s" % time.strftime("%Y-%m-%d %H:%M:%S")
        self.live = LiveDetections(run_name)
        self.engine = EngineProcess(self)
        self.engine.received.connect(self._on_event)
        self.engine.finished.connect(self._on_run_finished)
        self.progress.setValue(0)
        self.stage_label.setText("Starting the engine…")
        self.counts_label.setText("")
        self.run_button.setEnabled(False)
        self.plan_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.engine.start(interpreter, args)

    def cancel(self) -> None:
        if self.engine is not None and self.engine.running:
            self.stage_label.setText("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)
            self.engine.cancel(self.stop_policy)

    def _on_event(self, event) -> None:
        kind = event.type
        if kind == "features":
            self.live.add(event.get("crs"), valid_features(event))
            self.counts_label.setText("%d detections so far" % self.live.count)
        elif kind == "progress":
            total = event.get("total") or 0
            self.progress.setValue(overall_percent(event.get("stage"), event.get("done"), total))
            self.stage_label.setText("%s: %d / %d" % (event.get("stage"), event.get("done"), total))
            self.counts_label.setText(self.engine.state.summary())
        elif kind == "stage":
            self.progress.setValue(max(self.progress.value(), overall_percent(event.get("stage"), 0, 0)))
            self.stage_label.setText("%s: %s" % (event.get("stage"), event.get("message")))
        elif kind == "warning":
            self.notify(str(event.get("message")), str(event.get("hint") or ""), Qgis.Warning, 5)
        elif kind == "error":
            self.notify(str(event.get("message")), str(event.get("hint") or ""), Qgis.Critical, 0)
            log.critical("engine error %s: %s" % (event.get("code"), event.to_dict()))

    def _on_run_finished(self, status: str, state) -> None:
        self.last_status = status
        self.run_button.setEnabled(True)
        self.plan_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        output = ((state.result or {}).get("outputs") or {}).get("gpkg") or self.last_output
        layer = None
        if output and os.path.exists(output):
            layer = self.live.replace_with_output(output)
        if layer is not None:
            self.review_layer_combo.setLayer(layer)
        stats = (state.result or {}).get("stats") or {}
        cost = (state.result or {}).get("cost") or {}
        summary = "%s: %s detections" % (status, stats.get("detections", self.live.count))
        if stats:
            summary += ", %s chips inferred in %.1f s" % (stats.get("chips_inferred"), float(stats.get("seconds", 0)))
        if cost.get("run_usd") is not None:
            summary += ", cost %s" % usd(cost["run_usd"])
        self.stage_label.setText(summary)
        if status == "ok":
            self.progress.setValue(100)
            self.notify("run finished: " + summary, "", Qgis.Success, 5)
        elif status == "cancelled":
            self.notify("run cancelled; kept %d detections written so far" % self.live.count, "", Qgis.Info, 5)
        elif status == "partial":
            self.notify("run finished with failed chips: " + summary, "see the chips layer for which failed",
                        Qgis.Warning)
        elif not state.errors:  # an error event was already shown with its hint
            message, hint = self.engine.failure or ("the engine run failed", "")
            self.notify(message, hint, Qgis.Critical, 0)
        self.run_finished.emit(status)

    # ---------------------------------------------------------------- review
    def start_review(self, layer: Optional[QgsVectorLayer] = None) -> None:
        layer = layer or (self.live.output_layer if self.live else None)
        try:
            self.review = ReviewSession(layer)
        except ReviewError as exc:
            self.review = None
            self.notify(exc.message, exc.hint, Qgis.Warning)
        self._update_review_buttons()
        self.zoom_to_current()

    def review_next(self) -> None:
        if self.review:
            self.review.next()
            self.zoom_to_current()

    def review_previous(self) -> None:
        if self.review:
            self.review.previous()
            self.zoom_to_current()

    def review_mark(self, value: str) -> None:
        if not self.review:
            return
        try:
            self.review.mark(value)
        except ReviewError as exc:
            self.notify(exc.message, exc.hint, Qgis.Warning)
        self.zoom_to_current()

    def zoom_to_current(self) -> None:
        self._update_review_buttons()
        feature = self.review.current if self.review else None
        if feature is None:
            return
        canvas = self.canvas()
        layer = self.review.layer
        try:
            box = canvas.mapSettings().layerToMapCoordinates(layer, feature.geometry().boundingBox())
            box.scale(3.0)
            canvas.setExtent(box)
            canvas.refresh()
        except Exception as exc:  # a canvas without a CRS must not break reviewing
            log.warning("could not zoom to the detection: %s" % exc)

    def _update_review_buttons(self) -> None:
        active = self.review is not None and len(self.review) > 0
        for b in (self.prev_button, self.next_button, self.confirm_button, self.reject_button, self.export_button):
            b.setEnabled(active)
        if not active:
            self.review_label.setText("Finish a run (or pick a detections layer) and press Review.")
            return
        f = self.review.current
        counts = self.review.counts()
        self.review_label.setText("%d / %d · score %.2f · %s · %s · review: %s   (confirmed %d, rejected %d)" % (
            self.review.index + 1, len(self.review), float(f["score"] or 0), f["date"], f["chip_id"],
            f["review"] or "—", counts[CONFIRMED], counts[REJECTED]))

    def export(self, path: str) -> int:
        if not self.review:
            raise ReviewError("nothing is being reviewed", "press Review first")
        return export_labels(self.review.layer, path)

    # ---------------------------------------------------------------- dialogs
    def _choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Scenes", "", "Rasters (*.tif *.tiff *.jp2 *.vrt);;All (*)")
        self.add_scenes(paths)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of scenes")
        if folder:
            self.add_folder(folder)

    def _choose_stac(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "STAC catalog or item collection", "", "STAC JSON (*.json)")
        if path:
            self.add_scenes([path])

    def _choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model package folder")
        if folder:
            self.model_edit.setText(folder)
            self.load_model()

    def _choose_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Detections GeoPackage", "", "GeoPackage (*.gpkg)")
        if path:
            self.output_edit.setText(path if path.endswith(".gpkg") else path + ".gpkg")

    def _choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "", "GeoPackage (*.gpkg)")
        if not path:
            return
        try:
            n = self.export(path)
        except ReviewError as exc:
            self.notify(exc.message, exc.hint, Qgis.Warning)
            return
        self.notify("exported %d labels to %s (layer 'labels', for groundbreak train)" % (n, path), "", Qgis.Success)

    def _forget(self, query) -> None:
        if query in self._queries:
            self._queries.remove(query)
        query.deleteLater()

    def shutdown(self) -> None:
        """Called when the plugin unloads: stop any run and drop canvas items."""
        for proc in (self.engine, self.planner):
            if proc is not None and proc.running:
                proc.stop_and_wait(UNLOAD_POLICY)
        for query in list(self._queries):
            query.kill()
        if self.map_tool is not None and self.canvas().mapTool() is self.map_tool:
            self.canvas().unsetMapTool(self.map_tool)
        if self.aoi_band is not None:
            try:
                self.canvas().destinationCrsChanged.disconnect(self._show_aoi)
            except TypeError:
                pass
            self.canvas().scene().removeItem(self.aoi_band)
            self.aoi_band = None


def default_output_path() -> str:
    home = QgsProject.instance().homePath() or os.path.join(os.path.expanduser("~"), "groundbreak-runs")
    return os.path.join(home, "groundbreak-run-%s.gpkg" % time.strftime("%Y%m%d-%H%M%S"))


def _match_real_path(by_path: dict, path: str):
    real = os.path.realpath(path)
    for key, scenes in by_path.items():
        if os.path.realpath(key) == real:
            return scenes
    return None
