"""The plugin object QGIS loads: toolbar, menu, dock and the Processing provider."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, List, Optional

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QToolBar

if TYPE_CHECKING:
    from .dock import GroundbreakDock
    from .provider import GroundbreakProvider
    from .setup_dialog import SetupDialog
    from .setup_engine import EngineSetup

from . import settings
from .resources import icon_path

MENU = "&Groundbreak"


class GroundbreakPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.dock: Optional["GroundbreakDock"] = None
        self.provider: Optional["GroundbreakProvider"] = None
        self.actions: List[QAction] = []
        self.toolbar: Optional[QToolBar] = None
        self.setup: Optional["EngineSetup"] = None
        self.setup_dialog: Optional["SetupDialog"] = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS calls this name)
        from .provider import GroundbreakProvider

        if self.provider is None:
            self.provider = GroundbreakProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        from .dock import GroundbreakDock

        self.initProcessing()
        icon = QIcon(icon_path())
        self.dock = GroundbreakDock(self.iface, self.iface.mainWindow())
        self.dock.on_setup = self.setup_engine
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.toolbar = self.iface.addToolBar("Groundbreak")
        self.toolbar.setObjectName("GroundbreakToolbar")
        show = self._action(icon, "Groundbreak panel", self._toggle_dock, toolbar=True)
        show.setCheckable(True)
        show.setChecked(True)
        self.dock.visibilityChanged.connect(show.setChecked)
        theme = QgsApplication.getThemeIcon
        self._action(theme("/mActionCapturePolygon.svg"), "Draw AOI polygon", lambda: self._draw("polygon"),
                     toolbar=True)
        self._action(theme("/mActionRectangleExtent.svg"), "Draw AOI rectangle", lambda: self._draw("rectangle"),
                     toolbar=True)
        self._action(theme("/mActionOptions.svg"), "Settings…", self.show_settings)
        self._action(theme("/mActionAddBasicShape.svg"), "Set up engine…", lambda: self.setup_engine())

    def _action(self, icon, text, slot, toolbar=False) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        if toolbar and self.toolbar is not None:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def _toggle_dock(self, checked=None) -> None:
        if self.dock is not None:
            self.dock.setVisible(not self.dock.isVisible() if checked is None else bool(checked))

    def _draw(self, mode: str) -> None:
        if self.dock is not None:
            self.dock.show()
            self.dock.start_drawing(mode)

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        if SettingsDialog(self.iface.mainWindow(), on_setup=lambda: self.setup_engine()).exec_() and self.dock:
            self.dock.refresh_engine()  # another interpreter or runtime: say what runs will use

    def setup_engine(self, plan=None) -> None:
        """Builds a new engine environment; the configured engine changes only when it works."""
        from .setup_dialog import SetupDialog
        from .setup_engine import EngineSetup, SetupError, plan_setup

        if self.setup is not None and self.setup_dialog is not None and self.setup_dialog.ok is None:
            self.setup_dialog.show()
            self.setup_dialog.raise_()
            return
        try:
            if plan is None:
                from .setup_dialog import SetupChoiceDialog

                choice = SetupChoiceDialog(self.iface.mainWindow())
                if not choice.exec_():
                    return
                plan = plan_setup(settings.engine_root(), kind=choice.kind)
        except SetupError as exc:
            self.iface.messageBar().pushMessage("Groundbreak", str(exc), level=Qgis.Critical, duration=0)
            return
        self.setup = EngineSetup(plan)
        self.setup_dialog = SetupDialog(self.setup, self.iface.mainWindow())
        self.setup.finished.connect(self._setup_finished)
        self.setup_dialog.show()
        self.setup.start()

    def _setup_finished(self, ok: bool, message: str) -> None:
        if not ok:
            self.iface.messageBar().pushMessage("Groundbreak", message, level=Qgis.Critical, duration=0)
            if self.dock is not None:
                self.dock.show_message(message, level="error")
            return
        from .setup_engine import managed_venvs

        assert self.setup is not None
        previous = settings.load().interpreter
        settings.save(settings.load().with_changes(interpreter=self.setup.plan.python))
        # the environments an earlier set-up made are no longer used (others are never touched)
        for venv in managed_venvs(settings.engine_root()):
            if venv != self.setup.plan.venv_dir and (not previous or previous.startswith(venv + os.sep)):
                shutil.rmtree(venv, ignore_errors=True)
        self.iface.messageBar().pushMessage("Groundbreak", message, level=Qgis.Success, duration=10)
        if self.dock is not None:
            self.dock.refresh_engine()

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
        self.actions = []
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
