"""The plugin object QGIS loads: toolbar, menu, dock and the Processing provider."""

from __future__ import annotations

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QProgressDialog

from . import log, settings
from .resources import icon_path

MENU = "&Groundbreak"


class GroundbreakPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.dock = None
        self.provider = None
        self.actions = []
        self.toolbar = None
        self.setup = None

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
        self._action(theme("/mActionAddBasicShape.svg"), "Set up engine…", self.setup_engine)

    def _action(self, icon, text, slot, toolbar=False) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        if toolbar:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def _toggle_dock(self, checked=None) -> None:
        self.dock.setVisible(not self.dock.isVisible() if checked is None else bool(checked))

    def _draw(self, mode: str) -> None:
        self.dock.show()
        self.dock.start_drawing(mode)

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow(), on_setup=self.setup_engine).exec_()

    def setup_engine(self) -> None:
        from .request import RequestError
        from .setup_engine import EngineSetup, plan_steps

        venv = settings.engine_venv_dir()
        try:
            steps = plan_steps(venv)
        except RequestError as exc:
            self.iface.messageBar().pushMessage("Groundbreak", "%s. %s" % (exc.message, exc.hint), level=Qgis.Critical)
            return
        dialog = QProgressDialog("Setting up the Groundbreak engine…", "Cancel", 0, len(steps), self.iface.mainWindow())
        dialog.setWindowTitle("Groundbreak: set up engine")
        dialog.setMinimumDuration(0)
        dialog.setValue(0)
        self.setup = EngineSetup(steps)
        self.setup.step_started.connect(lambda i, n, title: (dialog.setValue(i), dialog.setLabelText(title)))
        self.setup.output.connect(lambda line: dialog.setLabelText(
            self.setup.steps[self.setup.index].title + "\n" + line[-120:]))
        dialog.canceled.connect(self.setup.cancel)

        def finished(ok: bool, message: str) -> None:
            dialog.setValue(len(steps))
            dialog.close()
            if ok:
                values = settings.load()
                from .request import venv_python
                from pathlib import Path

                settings.save(values.with_changes(interpreter=str(venv_python(Path(venv)))))
                self.iface.messageBar().pushMessage("Groundbreak", "engine ready in %s" % venv, level=Qgis.Success)
            else:
                log.critical(message)
                self.iface.messageBar().pushMessage("Groundbreak", message, level=Qgis.Critical, duration=0)

        self.setup.finished.connect(finished)
        self.setup.start()

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
