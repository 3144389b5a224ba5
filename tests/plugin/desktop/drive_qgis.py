"""Runs inside the real QGIS desktop (``qgis --code drive_qgis.py``): drives the installed plugin through
the analyst's first hour on demo data and takes a screenshot of each state of the dock.

States: engine checked, a set-up in progress, a failed set-up (the old engine kept), scenes with a
folder's sidecar masks skipped and a wrong scene flagged, a plan refused with every problem, a plan,
mid-run, finished, the "output exists" dialog, a resumed run, review, and (after a second run over a
10-date world) the Sites tab with one site's score over time. Config comes from the JSON file
named by GB_DESKTOP_CONFIG; the outcome is written to ``config["result"]`` and QGIS exits 0 on success.
"""

import json
import os
import subprocess
import sys
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QMessageBox
from qgis.utils import iface, plugins

CFG = json.load(open(os.environ["GB_DESKTOP_CONFIG"]))
OUT = {"ok": False, "log": [], "shots": {}, "checks": {}}
STATE = {"mid": False, "finished": False, "t0": time.time()}


def note(text):
    OUT["log"].append("%.1fs %s" % (time.time() - STATE["t0"], text))
    with open(CFG["result"], "w") as fh:
        json.dump(OUT, fh, indent=1)


def check(name, value):
    OUT["checks"][name] = value
    note("check %s = %s" % (name, value))


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


def dock():
    return plugins["groundbreak"].dock


def shot(name, then=None, delay_ms=400):
    """Screenshot of the whole X screen once the canvas has rendered and the widgets have painted."""
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
            QTimer.singleShot(10, guarded(then))

    QTimer.singleShot(delay_ms, guarded(grab))


def zoom_to_aoi():
    canvas = iface.mapCanvas()
    scene_crs = QgsProject.instance().mapLayersByName(os.path.basename(CFG["scenes"][0]))[0].crs()
    QgsProject.instance().setCrs(scene_crs)
    canvas.setDestinationCrs(scene_crs)
    aoi = QgsProject.instance().mapLayersByName("AOI")[0]
    extent = canvas.mapSettings().layerExtentToOutputExtent(aoi, aoi.extent())
    extent.scale(1.15)
    canvas.setExtent(extent)
    canvas.refresh()


def once(signal, slot):
    """Connects ``slot`` for one emission of ``signal``."""
    def handler(*args):
        try:
            signal.disconnect(handler)
        except TypeError:
            pass
        guarded(slot)(*args)
    signal.connect(handler)


# ---------------------------------------------------------------- the states, in order
@guarded
def start():
    plugin = plugins.get("groundbreak")
    note("plugins loaded: %s" % sorted(plugins))
    if plugin is None or plugin.dock is None:
        return finish(False, "the groundbreak plugin is not loaded")
    window = iface.mainWindow()
    width, height = CFG["screen"]
    window.setGeometry(0, 0, width, height)  # Xvfb has no window manager to maximise it
    d = plugin.dock
    d.show()
    d.raise_()
    window.resizeDocks([d], [CFG.get("dock_width", 400)], Qt.Horizontal)
    layer = QgsRasterLayer(CFG["scenes"][0], os.path.basename(CFG["scenes"][0]))
    QgsProject.instance().addMapLayer(layer)
    aoi = QgsVectorLayer(CFG["aoi"], "AOI", "ogr")
    QgsProject.instance().addMapLayer(aoi)
    aoi.renderer().symbol().setOpacity(0.0)  # the dock draws the AOI outline itself
    d.aoi_layer_combo.setLayer(aoi)
    d.use_aoi_layer()
    d.output_edit.setText(CFG["out"])
    if CFG.get("model"):
        d.model_edit.setText(CFG["model"])
    zoom_to_aoi()
    once(d.engine_checked, engine_checked)
    d.refresh_engine()


@guarded
def engine_checked(status):
    d = dock()
    check("engine_label", d.engine_label.text())
    check("dock_height", d.height())
    check("dock_scrolls", d.widget().verticalScrollBar().isVisible())
    shot("1-engine-ready", setup_start)


@guarded
def setup_start():
    if not CFG.get("setup"):
        return scenes_start()
    sys.path.insert(0, CFG["tests_dir"])
    import tiny_wheel

    from groundbreak.setup_engine import SetupPlan

    plugin = plugins["groundbreak"]
    STATE["old_interpreter"] = plugin.dock.interpreter()
    from pathlib import Path

    wheel = tiny_wheel.build(Path(CFG["work"]) / "wheel")
    # a failed set-up first (a wheel that does not exist): the dialog says what failed, the engine stays
    plan = SetupPlan(base_python="/usr/bin/python3", venv_dir=os.path.join(CFG["work"], "engines", "engine-bad"),
                     source=os.path.join(CFG["work"], "groundbreak-9.9.9-py3-none-any.whl"),
                     extra_index=CFG["refused_index"], packages=())
    STATE["good_plan"] = SetupPlan(base_python="/usr/bin/python3",
                                   venv_dir=os.path.join(CFG["work"], "engines", "engine-good"), source=str(wheel),
                                   extra_index=CFG["refused_index"], packages=())
    plugin.setup_engine(plan)
    plugin.setup.step_started.connect(guarded(lambda i, n, title: shot("2-setup-running") if i == 2 else None))
    once(plugin.setup.finished, setup_failed)


@guarded
def setup_failed(ok, message):
    plugin = plugins["groundbreak"]
    check("failed_setup_message", message)
    check("failed_setup_kept_engine", plugin.dock.interpreter() == STATE["old_interpreter"])
    plugin.setup_dialog.log_button.click()
    shot("3-setup-failed", close_failed_dialog)


@guarded
def close_failed_dialog():
    plugins["groundbreak"].setup_dialog.accept()
    scenes_start()


@guarded
def scenes_start():
    d = dock()
    d.tabs.setCurrentIndex(0)
    once(d.info_finished, scenes_folder_done)
    d.add_folder(os.path.dirname(CFG["scenes"][0]))


@guarded
def scenes_folder_done():
    d = dock()
    check("scene_rows", [d.scene_list.item(i).text() for i in range(d.scene_list.count())])
    check("skipped", d.skipped_label.text())
    once(d.info_finished, scenes_bad_done)
    d.add_scenes([CFG["bad_scene"]])


@guarded
def scenes_bad_done():
    d = dock()
    check("bad_scene_rows", [d.scene_list.item(i).text() for i in range(d.scene_list.count())])
    check("bad_scene_message", d.message_view.toPlainText())
    check("dock_scrolls_with_problems", d.widget().verticalScrollBar().isVisible())
    shot("4-scenes-checked", plan_refused)


@guarded
def plan_refused():
    d = dock()
    once(d.plan_finished, plan_refused_done)
    d.plan()


@guarded
def plan_refused_done(result):
    d = dock()
    check("plan_refused", result is None)
    check("plan_problems", d.message_view.toPlainText())
    shot("5-plan-problems", plan_ok)


@guarded
def plan_ok():
    d = dock()
    bad = [i for i in range(d.scene_list.count()) if os.path.basename(CFG["bad_scene"]) in d.scene_list.item(i).text()]
    d.scene_list.clearSelection()
    for i in bad:
        d.scene_list.item(i).setSelected(True)
    d.remove_selected_scenes()
    once(d.plan_finished, plan_ok_done)
    d.plan()


@guarded
def plan_ok_done(result):
    d = dock()
    OUT["plan"] = d.plan_label.text()
    check("plan_ok", result is not None)
    if result is None:
        return finish(False, "plan failed: %s" % d.message_view.toPlainText())
    check("dock_scrolls_after_plan", d.widget().verticalScrollBar().isVisible())
    shot("6-plan", run_start)


@guarded
def run_start():
    d = dock()
    once(d.run_finished, run_done)
    d.run()
    d.engine.received.connect(guarded(on_event))


@guarded
def on_event(event):
    d = dock()
    if event.type == "features" and not STATE["mid"] and d.live.count > 0:
        STATE["mid"] = True
        OUT["mid_run"] = {"live_features": d.live.count, "engine_running": d.engine.running,
                          "stage": d.stage_label.text(), "progress": d.progress.value()}
        note("mid-run: %s" % OUT["mid_run"])
        zoom_to_aoi()
        shot("7-running", delay_ms=100)


@guarded
def run_done(status):
    d = dock()
    OUT["status"] = status
    note("run finished: %s; %s" % (status, d.stage_label.text()))
    layer = d.live.output_layer
    if status not in ("ok", "partial") or layer is None:
        return finish(False, "run ended with %s: %s" % (status, d.message_view.toPlainText()))
    OUT["detections"] = layer.featureCount()
    check("dock_scrolls_after_run", d.widget().verticalScrollBar().isVisible())
    zoom_to_aoi()
    shot("8-finished", resume_start)


@guarded
def resume_start():
    d = dock()

    def answer():
        box = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        if not box:
            return QTimer.singleShot(200, guarded(answer))
        OUT["resume_dialog"] = box[0].text()

        def press():
            resume = [b for b in box[0].buttons() if b.text().replace("&", "") == "Resume"]
            resume[0].click()
        shot("9-output-exists", press, delay_ms=300)

    QTimer.singleShot(300, guarded(answer))
    once(d.run_finished, resumed_done)
    QTimer.singleShot(0, guarded(d.run))  # run() shows the dialog modally


@guarded
def resumed_done(status):
    d = dock()
    check("resumed_status", status)
    check("resumed_summary", d.stage_label.text())
    check("resumed_counts", d.counts_label.text())
    shot("10-resumed", review_start)


@guarded
def review_start():
    d = dock()
    layer = d.live.output_layer
    d.start_review(layer)
    marks = []
    for value in ("confirmed", "rejected", "confirmed"):
        if d.review is not None and len(d.review):
            d.review_mark(value)
            marks.append(value)
    OUT["review"] = d.review_label.text()
    if marks:
        OUT["labels_exported"] = d.export(CFG["labels"])
    note("review: %s; exported %s" % (OUT["review"], OUT.get("labels_exported")))
    zoom_to_aoi()
    shot("11-review", sites_start)


@guarded
def sites_start():
    world = CFG.get("timeline_world")
    if not world:
        return setup_good()
    d = dock()
    aoi = QgsVectorLayer(world["aoi"], "timeline AOI", "ogr")
    QgsProject.instance().addMapLayer(aoi)
    aoi.renderer().symbol().setOpacity(0.0)
    d.aoi_layer_combo.setLayer(aoi)
    d.use_aoi_layer()
    d.clear_scenes()
    d.output_edit.setText(CFG["timeline_out"])
    d.tabs.setCurrentIndex(0)
    once(d.info_finished, sites_scenes_done)
    d.add_scenes(world["scenes"])


@guarded
def sites_scenes_done():
    d = dock()
    once(d.run_finished, sites_run_done)
    d.run()


@guarded
def sites_run_done(status):
    d = dock()
    check("sites_run_status", status)
    layer = d.sites_layer
    if status != "ok" or layer is None:
        return finish(False, "the run over 10 dates gave %s and sites layer %s: %s" % (
            status, layer, d.message_view.toPlainText()))
    check("sites_count", layer.featureCount())
    check("sites_categories", [c.value() for c in layer.renderer().categories()])
    check("sites_summary", d.stage_label.text())
    # the site with the most unknown dates: the plot shows its hollow markers and bands too
    from groundbreak import sites as plugin_sites  # the installed plugin's module

    observations = plugin_sites.observations_for(layer)
    site_id = max(plugin_sites.site_features(layer),
                  key=lambda f: len(plugin_sites.site_series(f, observations).unknown))["site_id"]
    d.tabs.setCurrentWidget(d.sites_page)
    d.show_site(site_id)
    series = d.site_plot.series
    check("site_plot", {"site": series.site_id if series else None, "caption": series.caption if series else "",
                        "known": len(d.site_plot.points()), "unknown": len(d.site_plot.unknown_points()),
                        "observations": len(series.observations) if series else 0})
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    extent = layer.extent()
    extent.scale(1.3)
    canvas.setExtent(extent)
    canvas.refresh()
    check("dock_scrolls_sites", d.widget().verticalScrollBar().isVisible())
    shot("12-sites", setup_good, delay_ms=1200)


@guarded
def setup_good():
    if not CFG.get("setup"):
        return finish(STATE["mid"] and OUT["detections"] > 0, "done")
    plugin = plugins["groundbreak"]
    plugin.setup_engine(STATE["good_plan"])
    once(plugin.setup.finished, setup_good_done)


@guarded
def setup_good_done(ok, message):
    plugin = plugins["groundbreak"]
    check("good_setup", [ok, message])
    once(plugin.dock.engine_checked, lambda status: shot("13-setup-done", lambda: finish(
        STATE["mid"] and OUT["detections"] > 0 and ok, "done")))


QTimer.singleShot(int(CFG.get("timeout_s", 300) * 1000), lambda: finish(False, "timed out"))
QTimer.singleShot(1500, start)
