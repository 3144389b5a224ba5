"""Runs inside the real QGIS desktop (``qgis --code drive_qgis.py``): drives the installed plugin
through a detection on demo data, takes screenshots mid-run and finished, reviews and exports.

Config comes from the JSON file named by GB_DESKTOP_CONFIG; the outcome is written to
``config["result"]`` and QGIS exits with 0 on success.
"""

import json
import os
import subprocess
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

CFG = json.load(open(os.environ["GB_DESKTOP_CONFIG"]))
OUT = {"ok": False, "log": [], "shots": {}}
STATE = {"mid": False, "finished": False, "t0": time.time()}


def note(text):
    OUT["log"].append("%.1fs %s" % (time.time() - STATE["t0"], text))
    with open(CFG["result"], "w") as fh:
        json.dump(OUT, fh, indent=1)


def finish(ok, why=""):
    if STATE["finished"]:
        return
    STATE["finished"] = True
    OUT["ok"] = ok
    note("finish ok=%s %s" % (ok, why))
    QTimer.singleShot(300, lambda: QgsApplication.exit(0 if ok else 1))


def guarded(fn):
    def wrapper(*args):
        try:
            return fn(*args)
        except Exception:  # anything unexpected must end the session with a report, not hang it
            note(traceback.format_exc())
            finish(False, "exception in %s" % fn.__name__)
    return wrapper


def shot(name, then=None):
    """Screenshot of the whole X screen once the canvas has finished rendering."""
    canvas = iface.mapCanvas()

    def grab():
        QApplication.processEvents()
        path = os.path.join(CFG["shots_dir"], "desktop-%s.png" % name)
        try:
            subprocess.run(["import", "-window", "root", path], check=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            note("import failed (%s); using Qt's grab" % exc)
            QApplication.primaryScreen().grabWindow(0).save(path)
        OUT["shots"][name] = path
        note("screenshot %s" % path)
        if then is not None:
            then()

    def rendered():
        try:
            canvas.mapCanvasRefreshed.disconnect(rendered)
        except TypeError:
            pass
        QTimer.singleShot(200, guarded(grab))

    canvas.mapCanvasRefreshed.connect(rendered)
    canvas.refresh()


def zoom_to_aoi():
    canvas = iface.mapCanvas()
    # QGIS may switch a fresh project to the CRS of a layer added later (the AOI is EPSG:4326);
    # show the scenes' own UTM grid so chips are square on the screenshots.
    scene_crs = QgsProject.instance().mapLayersByName(os.path.basename(CFG["scenes"][0]))[0].crs()
    QgsProject.instance().setCrs(scene_crs)
    canvas.setDestinationCrs(scene_crs)
    aoi = QgsProject.instance().mapLayersByName("AOI")[0]
    extent = canvas.mapSettings().layerExtentToOutputExtent(aoi, aoi.extent())
    extent.scale(1.15)
    canvas.setExtent(extent)


@guarded
def start():
    plugin = plugins.get("groundbreak")
    note("plugins loaded: %s" % sorted(plugins))
    if plugin is None or plugin.dock is None:
        return finish(False, "the groundbreak plugin is not loaded")
    dock = plugin.dock
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1600, 1000)  # Xvfb has no window manager to maximise it
    dock.show()
    dock.raise_()
    window.resizeDocks([dock], [560], Qt.Horizontal)
    for path in CFG["scenes"][:1]:
        layer = QgsRasterLayer(path, os.path.basename(path))
        QgsProject.instance().addMapLayer(layer)
    aoi = QgsVectorLayer(CFG["aoi"], "AOI", "ogr")
    QgsProject.instance().addMapLayer(aoi)
    aoi.renderer().symbol().setOpacity(0.0)  # the dock draws the AOI outline itself
    dock.aoi_layer_combo.setLayer(aoi)
    dock.use_aoi_layer()
    note("AOI: %s" % dock.aoi_label.text())
    dock.output_edit.setText(CFG["out"])
    if CFG.get("model"):
        dock.model_edit.setText(CFG["model"])
    dock.add_scenes(CFG["scenes"])
    canvas = iface.mapCanvas()
    zoom_to_aoi()
    note("project CRS %s, canvas CRS %s" % (QgsProject.instance().crs().authid(),
                                            canvas.mapSettings().destinationCrs().authid()))
    dock.model_finished.connect(lambda: note("model: %s" % dock.model_label.text()))
    dock.load_model()
    dock.plan_finished.connect(guarded(on_plan))
    dock.plan()


@guarded
def on_plan(result):
    dock = plugins["groundbreak"].dock
    OUT["plan"] = dock.plan_label.text()
    note("plan: %s" % OUT["plan"])
    if result is None:
        return finish(False, "plan failed")
    dock.run_finished.connect(guarded(on_finished))
    dock.run()
    dock.engine.received.connect(guarded(on_event))


@guarded
def on_event(event):
    dock = plugins["groundbreak"].dock
    if event.type == "features" and not STATE["mid"] and dock.live.count > 0:
        STATE["mid"] = True
        OUT["mid_run"] = {"live_features": dock.live.count, "engine_running": dock.engine.running,
                          "stage": dock.stage_label.text(), "progress": dock.progress.value()}
        note("mid-run: %s" % OUT["mid_run"])
        dock.widget().ensureWidgetVisible(dock.counts_label)
        zoom_to_aoi()
        shot("midrun")


@guarded
def on_finished(status):
    dock = plugins["groundbreak"].dock
    OUT["status"] = status
    note("run finished: %s; %s" % (status, dock.stage_label.text()))
    layer = dock.live.output_layer
    if status not in ("ok", "partial") or layer is None:
        return finish(False, "run ended with %s" % status)
    OUT["detections"] = layer.featureCount()
    dock.start_review(layer)
    marks = []
    for value in ("confirmed", "rejected", "confirmed"):
        if dock.review is not None and len(dock.review):
            dock.review_mark(value)
            marks.append(value)
    OUT["review"] = dock.review_label.text()
    dock.widget().ensureWidgetVisible(dock.export_button)
    if marks:
        OUT["labels_exported"] = dock.export(CFG["labels"])
    note("review: %s; exported %s" % (OUT["review"], OUT.get("labels_exported")))
    zoom_to_aoi()
    shot("finished", lambda: finish(STATE["mid"] and OUT["detections"] > 0, "done"))


QTimer.singleShot(int(CFG.get("timeout_s", 300) * 1000), lambda: finish(False, "timed out"))
QTimer.singleShot(1500, start)
