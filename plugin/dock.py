"""The Groundbreak dock: engine readiness, AOI, scenes (each checked against the model), model card,
plan and run with live detections, every message in full, review, and the sites of a multi-date run
with each site's score over time.

Layout: the common path (AOI, scenes, model, plan and run) is one tab in collapsible groups that fit a
1366 x 768 screen without scrolling; review and sites have their own tabs. Every control is reachable by keyboard
(Tab order follows the page; buttons carry mnemonics).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeySequence
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QShortcut,
    QSizePolicy,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import aoi as aoi_mod
from . import log, request, settings
from . import sites as sites_mod
from .aoi_tool import POLYGON, RECTANGLE, AoiMapTool
from .engine_process import EngineProcess, JsonQuery
from .engine_status import describe_status, status_argv
from .errors import PluginError
from .escalation import DEFAULT_POLICY, UNLOAD_POLICY
from .live_layer import LiveDetections
from .review import CONFIRMED, REJECTED, ReviewError, ReviewSession, export_labels
from .scenes import SceneEntry, format_error, is_stac, parse_info, problems_of, run_specs
from .site_plot import SitePlot
from .stream import overall_percent, valid_features
from .summary import describe_model, describe_model_short, describe_plan, describe_run

RESUME, OVERWRITE, NEW_FILE, CANCEL = "resume", "overwrite", "new file", "cancel"
LEVELS = {"info": Qgis.Info, "warning": Qgis.Warning, "error": Qgis.Critical, "success": Qgis.Success}


def _group(title: str) -> QgsCollapsibleGroupBox:
    box = QgsCollapsibleGroupBox(title)
    box.setCollapsed(False)
    return box


def _box_layout(box) -> QVBoxLayout:
    lay = QVBoxLayout(box)
    lay.setSpacing(2)
    lay.setContentsMargins(4, 2, 4, 2)
    return lay


def _row(*widgets, stretch_first: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setSpacing(4)
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if (stretch_first and i == 0) else 0)
    return row


class GroundbreakDock(QDockWidget):
    run_finished = pyqtSignal(str)  # status
    plan_finished = pyqtSignal(object)  # result data or None
    info_finished = pyqtSignal()
    model_finished = pyqtSignal()
    engine_checked = pyqtSignal(object)  # status dict or None

    def __init__(self, iface, parent=None) -> None:
        super().__init__("Groundbreak", parent)
        self.setObjectName("GroundbreakDock")
        self.iface = iface
        self.aoi_geoms: List[QgsGeometry] = []
        self.aoi_crs = QgsCoordinateReferenceSystem()
        self.aoi_source = ""
        self.entries: List[SceneEntry] = []
        self.specs: List[str] = []  # what the user added, in order
        self.removed_from: Dict[str, int] = {}  # spec -> scenes of it the user removed
        self.skipped: Dict[str, list] = {}  # spec -> files its discovery skipped (answered specs only)
        self.unreadable: Dict[str, str] = {}  # spec -> why the engine could not list it
        self.scene_info: Dict[str, dict] = {}
        self.model_info: Optional[dict] = None
        self.engine_status: Optional[dict] = None
        self.plan_result: Optional[dict] = None
        self.engine: Optional[EngineProcess] = None
        self.planner: Optional[EngineProcess] = None
        self.live: Optional[LiveDetections] = None
        self.review: Optional[ReviewSession] = None
        self.sites_layer: Optional[QgsVectorLayer] = None  # the layer the Sites tab shows
        self.observations: Optional[QgsVectorLayer] = None  # its site_observations (read, not in the project)
        self.last_status = ""
        self.last_output = ""
        self.last_message = ""
        self.scene_detail = ""
        self.scenes_summary = ""
        self.resume_note = ""
        self._queries: List[JsonQuery] = []
        self._pending_info = 0
        self._workdir = tempfile.mkdtemp(prefix="groundbreak-")
        self.map_tool: Optional[AoiMapTool] = None
        self._shown_once = False
        self.aoi_band: Optional[QgsRubberBand] = None
        self.stop_policy = DEFAULT_POLICY
        # what to do when the output exists: replaced by tests; the default asks the user
        self.ask_existing_output: Callable[[str], str] = self._ask_existing_output
        self.on_setup: Callable[[], None] = self._no_setup  # the plugin's "Set up engine" action
        self._build()

    # ---------------------------------------------------------------- UI
    def _build(self) -> None:
        body = QWidget()
        col = QVBoxLayout(body)
        col.setContentsMargins(4, 4, 4, 4)
        col.setSpacing(4)
        self.engine_label = QLabel("Engine: checking…")
        self.engine_label.setWordWrap(True)
        self.setup_button = QPushButton("Set up en&gine…")
        self.setup_button.setToolTip("Create the engine's own Python environment (torch CPU, OpenVINO)")
        col.addLayout(_row(self.engine_label, self.setup_button, stretch_first=True))

        self.tabs = QTabWidget()
        col.addWidget(self.tabs, 1)
        inputs_page = QWidget()
        inputs_col = QVBoxLayout(inputs_page)
        inputs_col.setContentsMargins(2, 2, 2, 2)
        inputs_col.setSpacing(2)
        self.tabs.addTab(inputs_page, "&Inputs")
        self._build_aoi(inputs_col)
        self._build_scenes(inputs_col)
        self._build_model(inputs_col)
        inputs_col.addStretch(1)
        self.run_page = QWidget()
        run_col = QVBoxLayout(self.run_page)
        run_col.setContentsMargins(2, 2, 2, 2)
        self._build_run(run_col)
        run_col.addStretch(1)
        self.tabs.addTab(self.run_page, "Plan && r&un")
        review_page = QWidget()
        review_col = QVBoxLayout(review_page)
        self._build_review(review_col)
        review_col.addStretch(1)
        self.review_page = review_page
        self.tabs.addTab(review_page, "Re&view")
        self.sites_page = QWidget()
        sites_col = QVBoxLayout(self.sites_page)
        sites_col.setContentsMargins(2, 2, 2, 2)
        self._build_sites(sites_col)
        self.tabs.addTab(self.sites_page, "&Sites")
        # every error, problem and hint in full (the message bar cuts long text to two lines); it scrolls
        # inside itself, so a long list of problems never pushes the buttons off the screen
        self.message_view = QPlainTextEdit()
        self.message_view.setReadOnly(True)
        self.message_view.setMinimumHeight(64)
        # only the room that is left (it scrolls inside): never the reason the dock needs a scroll bar
        self.message_view.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Ignored)
        self.message_view.setVisible(False)
        self.message_view.setTabChangesFocus(True)
        # the panel sits in the open tab, under its content, and takes the room that tab leaves
        # (not the Sites tab: its plot takes the room, and the tabs' minimum height must fit 1366 x 768)
        self.page_layouts = [inputs_col, run_col, review_col]
        self.tabs.currentChanged.connect(self._place_message)
        self._place_message(0)
        # the actions are always in view, whichever tab is open
        self.plan_button = QPushButton("&Plan")
        self.run_button = QPushButton("&Run")
        self.cancel_button = QPushButton("Ca&ncel")
        self.cancel_button.setEnabled(False)
        col.addLayout(_row(self.plan_button, self.run_button, self.cancel_button))

        scroll = QScrollArea()  # only for screens smaller than 1366 x 768
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._connect()

    def _place_message(self, index: int) -> None:
        if 0 <= index < len(self.page_layouts):
            self.page_layouts[index].addWidget(self.message_view, 20)

    def _build_aoi(self, col) -> None:
        self.aoi_box = box = _group("AOI")
        lay = _box_layout(box)
        self.draw_polygon_button = QPushButton("Draw p&olygon")
        self.draw_rect_button = QPushButton("Draw rec&tangle")
        self.clear_aoi_button = QPushButton("Clear")
        lay.addLayout(_row(self.draw_polygon_button, self.draw_rect_button, self.clear_aoi_button))
        self.aoi_layer_combo = QgsMapLayerComboBox()
        self.aoi_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.aoi_layer_combo.setAllowEmptyLayer(True)
        self.aoi_selected_check = QCheckBox("selected only")
        self.use_layer_button = QPushButton("Use layer")
        lay.addLayout(_row(self.aoi_layer_combo, self.aoi_selected_check, self.use_layer_button, stretch_first=True))
        self.aoi_label = QLabel("No AOI yet: draw one or pick a polygon layer.")
        self.aoi_label.setWordWrap(True)
        lay.addWidget(self.aoi_label)
        self.aoi_label.setVisible(False)  # its text is the group's title (one line less on small screens)
        col.addWidget(box)

    def _build_scenes(self, col) -> None:
        self.scenes_box = box = _group("Scenes")
        lay = _box_layout(box)
        self.scene_list = QListWidget()
        self.scene_list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.scene_list.setMinimumHeight(56)
        self.scene_list.setMaximumHeight(84)
        lay.addWidget(self.scene_list)
        self.add_button = QToolButton()
        self.add_button.setText("&Add scenes")
        self.add_button.setPopupMode(QToolButton.InstantPopup)
        self.add_button.setToolButtonStyle(Qt.ToolButtonTextOnly)
        menu = QMenu(self.add_button)
        self.add_files_action = menu.addAction("Files…")
        self.add_folder_action = menu.addAction("Folder…")
        self.add_stac_action = menu.addAction("STAC catalog or item collection…")
        self.add_layers_action = menu.addAction("Rasters of this project")
        self.add_button.setMenu(menu)
        self.remove_scene_button = QPushButton("Remove")
        self.remove_scene_button.setToolTip("Remove the selected scenes (Delete)")
        self.clear_scenes_button = QPushButton("Clear all")
        row = _row(self.add_button, self.remove_scene_button, self.clear_scenes_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.skipped_label = QLabel("")
        self.skipped_label.setWordWrap(True)
        self.skipped_label.setVisible(False)
        lay.addWidget(self.skipped_label)
        col.addWidget(box)

    def _build_model(self, col) -> None:
        self.model_box = box = _group("Model and output")
        lay = _box_layout(box)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default model")
        self.model_browse_button = QPushButton("…")
        self.model_browse_button.setToolTip("Choose a model package folder")
        self.model_load_button = QPushButton("&Load")
        lay.addLayout(_row(self.model_edit, self.model_browse_button, self.model_load_button, stretch_first=True))
        self.model_label = QLabel("Model not loaded yet.")
        self.model_label.setWordWrap(True)
        lay.addWidget(self.model_label)
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("output GeoPackage (default: a new file per run)")
        self.output_browse_button = QPushButton("…")
        self.output_browse_button.setToolTip("Choose the output GeoPackage")
        lay.addLayout(_row(self.output_edit, self.output_browse_button, stretch_first=True))
        col.addWidget(box)

    def _build_run(self, col) -> None:
        self.run_box = box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.plan_label = QLabel("Press Plan to see chips, expected drops, time and cost before running.")
        self.plan_label.setWordWrap(True)
        lay.addWidget(self.plan_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setMaximumHeight(16)
        lay.addWidget(self.progress)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        lay.addWidget(self.stage_label)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        lay.addWidget(self.counts_label)
        col.addWidget(box)

    def _build_review(self, col) -> None:
        self.review_box = QGroupBox("Review")
        lay = QVBoxLayout(self.review_box)
        self.review_layer_combo = QgsMapLayerComboBox()
        self.review_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.review_start_button = QPushButton("Review")
        lay.addLayout(_row(self.review_layer_combo, self.review_start_button, stretch_first=True))
        self.prev_button = QPushButton("◀ Prev (P)")
        self.next_button = QPushButton("Next (N) ▶")
        self.confirm_button = QPushButton("Confirm (C)")
        self.reject_button = QPushButton("Reject (R)")
        lay.addLayout(_row(self.prev_button, self.next_button))
        lay.addLayout(_row(self.confirm_button, self.reject_button))
        self.review_label = QLabel("")
        self.review_label.setWordWrap(True)
        lay.addWidget(self.review_label)
        self.export_button = QPushButton("Export labels…")
        lay.addWidget(self.export_button)
        col.addWidget(self.review_box)

    def _build_sites(self, col) -> None:
        self.sites_layer_combo = QgsMapLayerComboBox()
        self.sites_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.sites_layer_combo.setAllowEmptyLayer(True)
        self.sites_layer_combo.setToolTip("The sites layer of a run over several dates")
        self.sites_layer_combo.setLayer(None)
        col.addWidget(self.sites_layer_combo)
        self.sites_label = QLabel("A run over several dates adds its sites here (or run groundbreak:timeline).")
        self.sites_label.setWordWrap(True)
        col.addWidget(self.sites_label)
        self.site_list = QListWidget()
        self.site_list.setMinimumHeight(48)
        self.site_list.setMaximumHeight(88)
        self.site_list.setToolTip("Pick a site (or select one on the map) to see its score over time")
        col.addWidget(self.site_list)
        self.site_plot = SitePlot()
        self.site_plot.setMinimumHeight(200)  # it grows into the room the dock has
        col.addWidget(self.site_plot, 10)

    def _connect(self) -> None:
        self.setup_button.clicked.connect(lambda: self.on_setup())
        self.draw_polygon_button.clicked.connect(lambda: self.start_drawing(POLYGON))
        self.draw_rect_button.clicked.connect(lambda: self.start_drawing(RECTANGLE))
        self.clear_aoi_button.clicked.connect(self.clear_aoi)
        self.use_layer_button.clicked.connect(self.use_aoi_layer)
        self.add_layers_action.triggered.connect(lambda: self.add_project_rasters())
        self.add_files_action.triggered.connect(lambda: self._choose_files())
        self.add_folder_action.triggered.connect(lambda: self._choose_folder())
        self.add_stac_action.triggered.connect(lambda: self._choose_stac())
        self.remove_scene_button.clicked.connect(self.remove_selected_scenes)
        self.clear_scenes_button.clicked.connect(self.clear_scenes)
        self.scene_list.itemSelectionChanged.connect(self._show_scene_detail)
        self.model_browse_button.clicked.connect(self._choose_model)
        self.model_load_button.clicked.connect(self.model_changed)
        self.model_edit.returnPressed.connect(self.model_changed)
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
        self.sites_layer_combo.layerChanged.connect(self._on_sites_layer_chosen)
        self.site_list.currentRowChanged.connect(self._on_site_row)
        delete = QShortcut(QKeySequence(QKeySequence.Delete), self.scene_list)
        delete.setContext(Qt.WidgetShortcut)
        delete.activated.connect(self.remove_selected_scenes)
        # Plain-letter shortcuts only while the review tab has focus, so they never steal QGIS's own keys
        # or a text field's letters.
        self.shortcuts = [delete]
        for key, slot in (("C", lambda: self.review_mark(CONFIRMED)), ("R", lambda: self.review_mark(REJECTED)),
                          ("N", self.review_next), ("P", self.review_previous), ("Right", self.review_next),
                          ("Left", self.review_previous), ("Z", self.zoom_to_current)):
            shortcut = QShortcut(QKeySequence(key), self.review_box)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
            self.shortcuts.append(shortcut)
        self._update_review_buttons()

    def _no_setup(self) -> None:
        self.show_message("Use Plugins › Groundbreak › Set up engine…", level="info")

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        # readiness and the model card are cheap (neither loads torch): show them on first view
        if not self._shown_once:
            self._shown_once = True
            self.refresh_engine()

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

    def show_message(self, text: str, level: str = "error") -> None:
        """Shows a message in full in the dock (and the log); empty text hides the panel."""
        self.last_message = text
        self.message_view.setPlainText(text)
        self.message_view.setVisible(bool(text))
        colour = {"error": "#b00020", "warning": "#8a5a00", "success": "#1b5e20"}.get(level, "")
        self.message_view.setStyleSheet("color: %s;" % colour if colour else "")
        if text:
            (log.critical if level == "error" else log.info)(text)

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
        mode = self.map_tool.mode if self.map_tool is not None else "shape"
        self.set_aoi([geom], self.canvas().mapSettings().destinationCrs(), "drawn %s" % mode)

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
            self.aoi_box.setTitle("AOI: none yet")
            self._show_aoi()
            return
        km2 = aoi_mod.area_km2(self.aoi_geoms, self.aoi_crs)
        self.aoi_label.setText("AOI: %.2f km² (%d polygon%s, %s, %s)" % (
            km2, len(self.aoi_geoms), "" if len(self.aoi_geoms) == 1 else "s", source, self.aoi_crs.authid()))
        self.aoi_box.setTitle("AOI: %.2f km² (%d polygon%s)" % (km2, len(self.aoi_geoms),
                                                                "" if len(self.aoi_geoms) == 1 else "s"))
        self.aoi_box.setToolTip(self.aoi_label.text())
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

    # ---------------------------------------------------------------- engine
    def refresh_engine(self) -> None:
        """Checks the engine (version, OpenVINO) and loads the model card; after "Set up engine" too."""
        interpreter = self.interpreter()
        if not interpreter or not os.path.exists(interpreter):
            self.engine_status = None
            self.engine_label.setText("Engine not set up: press Set up engine (about 2 minutes), or choose an "
                                      "engine Python in Settings.")
            self.engine_checked.emit(None)
            return
        self.engine_label.setText("Engine: checking %s…" % interpreter)
        query = JsonQuery(self)
        query.done.connect(lambda value, error: self._on_engine_status(query, value, error))
        self._queries.append(query)
        query.start_argv(status_argv(interpreter), "status")
        self.load_model()

    def _on_engine_status(self, query, value, error) -> None:
        self._forget(query)
        self.engine_status = value
        self.engine_label.setText(describe_status(value, self.settings().runtime, error and error[0]))
        self.engine_label.setToolTip("%s\nPython %s" % (self.interpreter(), (value or {}).get("python", "?")))
        self.engine_checked.emit(value)

    # ---------------------------------------------------------------- scenes
    def scene_paths(self) -> List[str]:
        """What plan and run are given: specs intact, or the remaining scenes of a trimmed spec."""
        # a spec that listed nothing (or could not be read) is still handed on: the engine says why
        return run_specs(self.entries, self.removed_from) + [s for s in self.specs if not self._entries_of(s)]

    def _entries_of(self, spec: str) -> List[SceneEntry]:
        return [e for e in self.entries if e.spec == spec]


    def add_scenes(self, specs: List[str]) -> None:
        """Adds files, folders, globs or STAC JSON; the engine's discovery lists their scenes."""
        new = [s for s in specs if s and s not in self.specs]
        if not new:
            return
        self.specs += new
        self.plan_result = None
        files = [s for s in new if os.path.isfile(s) and not is_stac(s)]
        others = [s for s in new if s not in files]
        batches = ([files] if files else []) + [[s] for s in others]
        for batch in batches:
            for spec in batch:
                item = QListWidgetItem("%s  (reading…)" % os.path.basename(spec.rstrip("/")))
                item.setData(Qt.UserRole, spec)
                item.setData(Qt.UserRole + 1, "pending")
                self.scene_list.addItem(item)
            self._query_info(batch)

    def _model_arg(self) -> Optional[str]:
        return self.model_edit.text().strip() or self.settings().model_dir or None

    def _query_info(self, batch: List[str], check_model: bool = True) -> None:
        query = JsonQuery(self)
        query.done.connect(lambda value, error: self._on_scene_info(query, batch, check_model, value, error))
        self._queries.append(query)
        self._pending_info += 1
        query.start(self.interpreter(), request.info_args(batch, self._model_arg(), check_model))

    def refresh_scene_info(self) -> None:
        """Asks the engine again about every spec (the model changed)."""
        specs = list(self.specs)
        self.entries, self.specs, self.removed_from, self.skipped, self.unreadable = [], [], {}, {}, {}
        self.scene_list.clear()
        self.add_scenes(specs)

    def _on_scene_info(self, query, batch, check_model, value, error) -> None:
        self._forget(query)
        self._pending_info -= 1
        if error and check_model and "--model" in error[0] and "no such option" in error[0].lower():
            # an engine older than this plugin: list the scenes without the model check
            self.show_message("This engine cannot check scenes against the model yet (it has no "
                              "`info --model`); run Set up engine to update it.", level="warning")
            self._query_info(batch, check_model=False)
            return
        if batch[0] not in self.specs:  # cleared meanwhile
            self._finish_info()
            return
        if error:
            for spec in batch:
                self.unreadable[spec] = error[0]
            self.show_message("Could not read %s: %s\nHint: %s" % (", ".join(batch), error[0], error[1]))
            self.notify(error[0], error[1], Qgis.Warning)
        else:
            self._take_info(batch, value)
        self._render_scenes()
        self._finish_info()

    def _take_info(self, batch: List[str], value: dict) -> None:
        entries, skipped = parse_info(value, batch[0])
        if len(batch) > 1:  # several files in one query: each scene belongs to its own file
            real = {os.path.realpath(s): s for s in batch}
            entries = [SceneEntry(**dict(e.__dict__, spec=real.get(os.path.realpath(e.path), e.path)))
                       for e in entries]
        for scene in value.get("scenes") or []:
            self.scene_info[str(scene.get("path"))] = scene
        for spec in batch:
            self.skipped[spec] = [s for s in skipped if len(batch) == 1 or os.path.realpath(s.path) ==
                                  os.path.realpath(spec)]
        self.entries += entries

    def _finish_info(self) -> None:
        if self._pending_info <= 0:
            self._pending_info = 0
            self.info_finished.emit()

    def _render_scenes(self, show_detail: bool = True) -> None:
        warn = QgsApplication.getThemeIcon("/mIconWarning.svg")
        ok = QgsApplication.getThemeIcon("/mIconSuccess.svg")
        selected = {i.data(Qt.UserRole + 2) for i in self.scene_list.selectedItems()}
        self.scene_list.clear()
        first_bad = None
        for spec in self.specs:
            mine = self._entries_of(spec)
            if not mine:
                state = ("failed" if spec in self.unreadable else "empty" if spec in self.skipped else "pending")
                text = {"failed": "could not be read (see the message below)", "pending": "(reading…)",
                        "empty": "no scenes found"}[state]
                item = QListWidgetItem(warn if state != "pending" else ok, "%s  %s" % (os.path.basename(
                    spec.rstrip("/")), text))
                if state == "pending":
                    item.setIcon(QgsApplication.getThemeIcon("/mIconInfo.svg"))
                item.setData(Qt.UserRole, spec)
                self.scene_list.addItem(item)
                continue
            for entry in mine:
                item = QListWidgetItem(warn if entry.usable is False or entry.problems else ok, entry.line())
                item.setData(Qt.UserRole, entry.path)
                item.setData(Qt.UserRole + 2, entry.path + "|" + entry.spec)
                item.setToolTip(entry.details())
                self.scene_list.addItem(item)
                if (entry.usable is False or entry.problems) and first_bad is None:
                    first_bad = item
                if entry.path + "|" + entry.spec in selected:
                    item.setSelected(True)
        if first_bad is not None:
            self.scene_list.scrollToItem(first_bad)  # a scene that cannot be used is in view, with its icon
        unusable = [e for e in self.entries if e.usable is False or e.problems]
        total = len(self.entries)
        self.scenes_summary = "%d scene%s%s" % (total, "" if total == 1 else "s",
                                                ", %d cannot be used" % len(unusable) if unusable else "")
        self.scenes_box.setTitle("Scenes: " + self.scenes_summary if total else "Scenes")
        skipped = [s for spec in self.specs for s in self.skipped.get(spec, [])]
        self.skipped_label.setVisible(bool(skipped))
        if skipped:
            self.skipped_label.setText("Skipped %d file%s that %s not scenes (hover for the list)" % (
                len(skipped), "" if len(skipped) == 1 else "s", "is" if len(skipped) == 1 else "are"))
            self.skipped_label.setToolTip("\n".join("%s: %s" % (s.path, s.reason) for s in skipped))
        if not show_detail:
            return
        if unusable and not self.scene_list.selectedItems():
            self._show_entries(unusable[:1], prefix="%d of %d scenes cannot be used. " % (len(unusable), total)
                               if len(unusable) > 1 else "")
        else:
            self._show_scene_detail()

    def _selected_entries(self) -> List[SceneEntry]:
        keys = {i.data(Qt.UserRole + 2) for i in self.scene_list.selectedItems()}
        return [e for e in self.entries if e.path + "|" + e.spec in keys]

    def _show_scene_detail(self) -> None:
        chosen = self._selected_entries()
        self._show_entries([e for e in chosen if e.problems][:2] or chosen[:1])

    def _show_entries(self, entries: List[SceneEntry], prefix: str = "") -> None:
        lines = []
        for e in entries:
            if e.problems:
                lines.append("⚠ %s cannot be used:" % e.name)
                lines += ["  • %s\n     Hint: %s" % (p.message, p.hint) if p.hint else "  • " + p.message
                          for p in e.problems]
        self.scene_detail = prefix + "\n".join(lines)
        if lines:
            self.show_message(self.scene_detail, level="warning")
        elif self.last_message.startswith("⚠") or "cannot be used" in self.last_message[:80]:
            self.show_message("")

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
        self.add_scenes([folder])

    def remove_selected_scenes(self) -> None:
        """Removes every selected scene (several at once); removing part of a STAC catalog removes it all."""
        items = self.scene_list.selectedItems()
        if not items:
            return
        chosen = self._selected_entries()
        specs_gone = {i.data(Qt.UserRole) for i in items if i.data(Qt.UserRole + 2) is None}
        stac = {e.spec for e in chosen if is_stac(e.spec)}
        if stac:
            self.show_message("Single items of a STAC catalog cannot be left out: removed %s whole." % ", ".join(
                os.path.basename(s) for s in sorted(stac)), level="warning")
        for entry in chosen:
            if entry.spec in stac:
                continue
            self.entries.remove(entry)
            self.removed_from[entry.spec] = self.removed_from.get(entry.spec, 0) + 1
        for spec in list(specs_gone | stac):
            self._drop_spec(spec)
        for spec in list(self.specs):
            if not self._entries_of(spec) and self.removed_from.get(spec):
                self._drop_spec(spec)
        self.plan_result = None
        self._render_scenes()

    def _drop_spec(self, spec: str) -> None:
        self.entries = [e for e in self.entries if e.spec != spec]
        for store in (self.removed_from, self.skipped, self.unreadable):
            store.pop(spec, None)
        if spec in self.specs:
            self.specs.remove(spec)

    def clear_scenes(self) -> None:
        self.entries, self.specs, self.removed_from, self.skipped, self.unreadable = [], [], {}, {}, {}
        self.plan_result = None
        self._render_scenes()

    # ---------------------------------------------------------------- model
    def model_changed(self) -> None:
        """A new model: its card, and every scene checked again against it."""
        self.load_model()
        if self.specs:
            self.refresh_scene_info()

    def load_model(self) -> None:
        query = JsonQuery(self)
        query.done.connect(lambda value, error: self._on_model(query, value, error))
        self._queries.append(query)
        query.start(self.interpreter(), request.model_args(self._model_arg()))

    def _on_model(self, query, value, error) -> None:
        self._forget(query)
        if error:
            self.model_info = None
            self.model_label.setText("Model not loaded: " + error[0])
            self.model_label.setToolTip(error[0] + ("\nHint: " + error[1] if error[1] else ""))
            self.notify(error[0], error[1], Qgis.Warning)
        else:
            self.model_info = value
            card = describe_model(value)
            self.model_label.setText(describe_model_short(value))  # the full card is one hover away
            self.model_label.setToolTip(card + "\n" + str(value.get("path") or ""))
        self.model_finished.emit()

    # ---------------------------------------------------------------- plan / run
    def build_request(self, command: str, overwrite: bool = False) -> request.RunRequest:
        if not self.aoi_geoms:
            raise request.RequestError("no AOI given", "draw an AOI on the map or pick a polygon layer")
        aoi_path = aoi_mod.write_aoi_file(
            self.aoi_geoms, self.aoi_crs, os.path.join(self._workdir, "aoi-%d.gpkg" % int(time.time() * 1000)))
        s = self.settings()
        out = None
        if command == "run":
            out = self.output_edit.text().strip() or default_output_path()
        return request.RunRequest(
            aois=(aoi_path,), scenes=tuple(self.scene_paths()), out=out, model=self._model_arg(),
            min_valid=s.min_valid, batch_size=s.batch_size, threads=s.threads, price_per_hour=s.price_per_hour,
            aoi_id_field="aoi_id", runtime=s.runtime or None, overwrite=overwrite,
        )

    def plan(self) -> None:
        if self.planner is not None and self.planner.running:
            return
        try:
            args = request.run_args(self.build_request("plan"), "plan")
        except PluginError as exc:
            self._refuse(exc)
            self.plan_finished.emit(None)
            return
        self.plan_label.setText("Planning…")
        self.tabs.setCurrentWidget(self.run_page)
        self.show_message("")
        self.planner = EngineProcess(self)
        self.planner.finished.connect(self._on_plan_finished)
        self.planner.start(self.interpreter(), args)

    def _refuse(self, exc: PluginError) -> None:
        self.show_message(exc.message + ("\nHint: " + exc.hint if exc.hint else ""), level="warning")
        self.notify(exc.message, exc.hint, Qgis.Warning)

    def _on_plan_finished(self, status: str, state) -> None:
        if status == "ok" and state.result:
            self.plan_result = state.result
            self.plan_label.setText(describe_plan(state.result))
            self.plan_finished.emit(state.result)
            return
        self.plan_label.setText("Plan failed: the panel below lists every problem with what to do.")
        self._show_failure("Plan failed", state, self.planner.failure if self.planner is not None else None)
        self.plan_finished.emit(None)

    def _show_failure(self, title: str, state, failure) -> None:
        """Every problem of the engine's error (each with its hint) in the dock; the bar gets the gist."""
        if state.errors:
            error = state.errors[-1]
            self.show_message(format_error(title, error))
            self._mark_problems(problems_of(error))
            first = problems_of(error)[0]
            count = len(problems_of(error))
            self.notify("%s: %s%s" % (title, first.message.splitlines()[0],
                                      " (and %d more problems: see the Groundbreak panel)" % (count - 1)
                                      if count > 1 else ""), first.hint, Qgis.Critical, 0)
        else:
            message, hint = failure or ("the engine failed", "")
            self.show_message("%s: %s%s" % (title, message, "\nHint: " + hint if hint else ""))
            self.notify(message, hint, Qgis.Critical, 0)

    def _mark_problems(self, problems) -> None:
        """Problems the plan found that info did not show (e.g. the AOI overlap) go on their scenes too."""
        by_path: Dict[str, list] = {}
        for p in problems:
            if p.path:
                by_path.setdefault(os.path.realpath(p.path), []).append(p)
        if not by_path:
            return
        changed = []
        for entry in self.entries:
            extra = [p for p in by_path.get(os.path.realpath(entry.path), []) if p not in entry.problems]
            if extra:
                entry = SceneEntry(**dict(entry.__dict__, problems=entry.problems + tuple(extra), usable=False))
            changed.append(entry)
        self.entries = changed
        self._render_scenes(show_detail=False)  # the panel keeps the whole error

    def run(self) -> None:
        if self.engine is not None and self.engine.running:
            self.notify("a run is already going", "cancel it first", Qgis.Warning)
            return
        overwrite = False
        out = self.output_edit.text().strip()
        if out and os.path.exists(out):
            choice = self.ask_existing_output(out)
            if choice == CANCEL:
                self.run_finished.emit("not started")
                return
            if choice == NEW_FILE:
                self.output_edit.setText(next_free_path(out))
            overwrite = choice == OVERWRITE
        try:
            req = self.build_request("run", overwrite=overwrite)
            args = request.run_args(req, "run")
            interpreter = self.interpreter()
            request.engine_argv(interpreter, args)
        except PluginError as exc:
            self._refuse(exc)
            self.run_finished.emit("failed")
            return
        out = str(req.out)  # run_args refused a run without one
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        self.last_output = out
        self.resume_note = ""
        self.show_message("")
        run_name = "run %s" % time.strftime("%Y-%m-%d %H:%M:%S")
        self.live = LiveDetections(run_name)
        self.engine = EngineProcess(self)
        self.engine.received.connect(self._on_event)
        self.engine.finished.connect(self._on_run_finished)
        self.progress.setValue(0)
        self.stage_label.setText("Starting the engine…")
        self.counts_label.setText("")
        self.tabs.setCurrentWidget(self.run_page)
        self.run_button.setEnabled(False)
        self.plan_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.engine.start(interpreter, args)

    def _ask_existing_output(self, path: str) -> str:
        box = QMessageBox(QMessageBox.Question, "Groundbreak: the output exists",
                          "%s already exists.\n\nResume: keep its chips and run only the rest (the same run "
                          "settings are needed).\nOverwrite: start again (the old file is replaced once the new "
                          "run has written its first batch).\nNew file: write to %s." % (
                              path, os.path.basename(next_free_path(path))), parent=self)
        buttons = {box.addButton("&Resume", QMessageBox.AcceptRole): RESUME,
                   box.addButton("&Overwrite", QMessageBox.DestructiveRole): OVERWRITE,
                   box.addButton("&New file", QMessageBox.ActionRole): NEW_FILE,
                   box.addButton(QMessageBox.Cancel): CANCEL}
        box.setDefaultButton(list(buttons)[0])
        box.exec_()
        return buttons.get(box.clickedButton(), CANCEL)

    def cancel(self) -> None:
        if self.engine is not None and self.engine.running:
            self.stage_label.setText("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)
            self.engine.cancel(self.stop_policy)

    def _on_event(self, event) -> None:
        kind = event.type
        assert self.live is not None and self.engine is not None  # set by run() before the engine starts
        if kind == "features":
            self.live.add(event.get("crs"), valid_features(event))
            self.counts_label.setText("%d detections so far" % self.live.count)
        elif kind == "progress":
            total = event.get("total") or 0
            self.progress.setValue(overall_percent(event.get("stage"), event.get("done"), total))
            self.stage_label.setText("%s%s: %d / %d" % (self.resume_note and self.resume_note + " · ",
                                                        event.get("stage"), event.get("done"), total))
            self.counts_label.setText(self.engine.state.summary())
        elif kind == "stage":
            message = str(event.get("message") or "")
            if message.startswith("resuming"):
                self.resume_note = message
            self.progress.setValue(max(self.progress.value(), overall_percent(event.get("stage"), 0, 0)))
            self.stage_label.setText("%s: %s" % (event.get("stage"), message))
        elif kind == "warning":
            self.notify(str(event.get("message")), str(event.get("hint") or ""), Qgis.Warning, 5)
        elif kind == "error":
            log.critical("engine error %s: %s" % (event.get("code"), event.to_dict()))

    def _on_run_finished(self, status: str, state) -> None:
        assert self.live is not None and self.engine is not None
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
        site_count = self._add_sites(output) if status in ("ok", "partial") and output else None
        in_output = layer.featureCount() if layer is not None else None
        summary = describe_run(status, state.result, self.live.count, in_output, state.counts)
        if site_count is not None:
            summary += "\n%s: see the Sites tab." % site_count
        self.stage_label.setText(summary)
        if state.result:
            self.counts_label.setText(state.summary())
        if status == "ok":
            self.progress.setValue(100)
            self.notify("run finished: " + summary, "", Qgis.Success, 5)
        elif status == "cancelled":
            self.notify("run cancelled; kept %d detections written so far" % self.live.count, "", Qgis.Info, 5)
        elif status == "partial":
            self.notify("run finished with failed chips: " + summary, "see the chips layer for which failed",
                        Qgis.Warning)
        else:
            self._show_failure("Run failed", state, self.engine.failure)
        self.run_finished.emit(status)

    # ---------------------------------------------------------------- sites
    def _add_sites(self, gpkg: str) -> Optional[str]:
        """The run's sites and observations into its layer group (a run over one date has none)."""
        if not os.path.exists(gpkg):
            return None
        group = self.live.group if self.live is not None else None
        layer, _observations = sites_mod.add_site_layers(gpkg, group=group)
        if layer is None:
            return None
        self.show_sites(layer)
        return sites_mod.describe_sites(sites_mod.site_features(layer))

    def show_sites(self, layer: Optional[QgsVectorLayer]) -> None:
        """Shows the sites of ``layer`` in the Sites tab and follows its selection."""
        if layer is not self.sites_layer_combo.currentLayer():
            self.sites_layer_combo.setLayer(layer)  # comes back here through layerChanged
            if layer is self.sites_layer_combo.currentLayer():
                return
        previous = self.sites_layer
        if previous is not None and previous is not layer:
            try:
                previous.selectionChanged.disconnect(self._on_site_selection)
            except (TypeError, RuntimeError):
                pass
        if not sites_mod.is_sites_layer(layer):
            self.sites_layer, self.observations = None, None
            self.site_list.clear()
            self.site_plot.set_series(None)
            self.sites_label.setText("A run over several dates adds its sites here (or run groundbreak:timeline)."
                                     if layer is None else "%s is not a sites layer." % layer.name())
            return
        assert isinstance(layer, QgsVectorLayer)
        if previous is not layer:
            layer.selectionChanged.connect(self._on_site_selection)
        self.sites_layer = layer
        self.observations = sites_mod.observations_for(layer)
        features = sites_mod.site_features(layer)
        self.site_list.blockSignals(True)
        self.site_list.clear()
        for feature in features:
            series_text = sites_mod.SiteSeries(str(feature[sites_mod.SITE_ID]),
                                               sites_mod.as_date(feature[sites_mod.START_DATE]),
                                               sites_mod.as_date(feature[sites_mod.END_DATE]),
                                               str(feature[sites_mod.ONGOING]) == "1", ()).caption
            item = QListWidgetItem(series_text)
            item.setData(Qt.UserRole, feature.id())
            self.site_list.addItem(item)
        self.site_list.blockSignals(False)
        self.sites_label.setText(sites_mod.describe_sites(features) + (
            "" if self.observations is not None else "; this file has no site_observations layer"))
        self.tabs.setTabText(self.tabs.indexOf(self.sites_page), "&Sites (%d)" % len(features))
        selected = layer.selectedFeatureIds()
        if selected:
            self._show_site_feature(selected[0])
        else:
            self.site_plot.set_series(None)

    def _on_sites_layer_chosen(self, layer) -> None:
        self.show_sites(layer if isinstance(layer, QgsVectorLayer) else None)

    def show_site(self, site_id: str) -> bool:
        """Selects the site on its layer (which shows its plot and zooms to it)."""
        if self.sites_layer is None:
            return False
        feature = sites_mod.find_site(self.sites_layer, site_id)
        if feature is None:
            return False
        self.sites_layer.selectByIds([feature.id()])
        self._zoom_to_site(feature)
        return True

    def _on_site_row(self, row: int) -> None:
        item = self.site_list.item(row) if row >= 0 else None
        if item is None or self.sites_layer is None:
            return
        fid = item.data(Qt.UserRole)
        self.sites_layer.selectByIds([fid])
        feature = self.sites_layer.getFeature(fid)
        if feature.isValid():
            self._zoom_to_site(feature)

    def _on_site_selection(self, selected, deselected, clear_and_select) -> None:
        layer = self.sites_layer
        ids = layer.selectedFeatureIds() if layer is not None else []
        if ids:
            self._show_site_feature(ids[0] if not selected or selected[0] not in ids else selected[0])

    def _show_site_feature(self, fid: int) -> None:
        layer = self.sites_layer
        if layer is None:
            return
        feature = layer.getFeature(fid)
        if not feature.isValid():
            return
        if self.observations is None:
            self.site_plot.set_series(None)
            return
        self.site_plot.set_series(sites_mod.site_series(feature, self.observations))
        for row in range(self.site_list.count()):
            if self.site_list.item(row).data(Qt.UserRole) == fid:
                self.site_list.blockSignals(True)
                self.site_list.setCurrentRow(row)
                self.site_list.blockSignals(False)

    def _zoom_to_site(self, feature) -> None:
        if self.sites_layer is None:
            return
        canvas = self.canvas()
        try:
            box = canvas.mapSettings().layerToMapCoordinates(self.sites_layer, feature.geometry().boundingBox())
            box.scale(2.5)
            canvas.setExtent(box)
            canvas.refresh()
        except Exception as exc:  # a canvas without a CRS must not break looking at sites
            log.warning("could not zoom to the site: %s" % exc)

    # ---------------------------------------------------------------- review
    def start_review(self, layer: Optional[QgsVectorLayer] = None) -> None:
        layer = layer or (self.live.output_layer if self.live else None)
        try:
            self.review = ReviewSession(layer)
        except ReviewError as exc:
            self.review = None
            self.notify(exc.message, exc.hint, Qgis.Warning)
        if self.review is not None:
            self.tabs.setCurrentWidget(self.review_page)
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
        review = self.review
        feature = review.current if review else None
        if review is None or feature is None:
            return
        canvas = self.canvas()
        layer = review.layer
        try:
            box = canvas.mapSettings().layerToMapCoordinates(layer, feature.geometry().boundingBox())
            box.scale(3.0)
            canvas.setExtent(box)
            canvas.refresh()
        except Exception as exc:  # a canvas without a CRS must not break reviewing
            log.warning("could not zoom to the detection: %s" % exc)

    def _update_review_buttons(self) -> None:
        review = self.review
        active = review is not None and len(review) > 0
        for b in (self.prev_button, self.next_button, self.confirm_button, self.reject_button, self.export_button):
            b.setEnabled(active)
        f = review.current if review is not None and active else None
        if review is None or f is None:
            self.review_label.setText("Finish a run (or pick a detections layer) and press Review.")
            return
        counts = review.counts()
        self.review_label.setText("%d / %d · score %.2f · %s · %s · review: %s   (confirmed %d, rejected %d)" % (
            review.index + 1, len(review), float(f["score"] or 0), f["date"], f["chip_id"],
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
            self.model_changed()

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
        if self.sites_layer is not None:
            try:
                self.sites_layer.selectionChanged.disconnect(self._on_site_selection)
            except (TypeError, RuntimeError):
                pass
            self.sites_layer = None
        # The project outlives the dock: its layer removals at exit must not call into a dead dock
        # (seen: a segfault at interpreter exit after a run that added sites).
        try:
            self.sites_layer_combo.layerChanged.disconnect(self._on_sites_layer_chosen)
        except (TypeError, RuntimeError):
            pass
        self.sites_layer_combo.setLayer(None)
        self.observations = None
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


def next_free_path(path: str) -> str:
    """``run.gpkg`` -> ``run-2.gpkg`` (or -3 …): a file name beside ``path`` that does not exist yet."""
    base, ext = os.path.splitext(path)
    n = 2
    while os.path.exists("%s-%d%s" % (base, n, ext)):
        n += 1
    return "%s-%d%s" % (base, n, ext)
