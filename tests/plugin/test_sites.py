"""Activity over time in QGIS, on a real engine run over a 10-date generated world: the sites layer
styled by start year (ongoing dashed), the temporal filters of sites, observations and detections,
the score-over-time plot fed with real site_observations (its points, its unknown markers and its
pixels), the dock's Sites tab, and ``groundbreak:timeline`` / ``detect``'s site outputs through
``processing.run`` and ``qgis_process.bin``. Everything expected is read from the GeoPackage with
sqlite3, independently of QGIS."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess

import pytest
from conftest import ENGINE_PY, needs_engine
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsDateTimeRange,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsFeatureRequest,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsSymbolLayer,
    QgsVectorLayer,
    QgsVectorLayerTemporalContext,
    QgsVectorLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QSize, QTime
from qgis.PyQt.QtGui import QColor
from qgis_helpers import SettingsSandbox

from plugin import sites
from plugin.site_plot import ACTIVE_POINT, INACTIVE_POINT, START, UNKNOWN, SitePlot

pytestmark = [needs_engine, pytest.mark.slow]

WORLD = """
import json, sys
from dataclasses import replace
from groundbreak.world import generate_world, timeline_spec
# a 2 x 2 km cut of the timeline demo world: 10 dates over 2022-2024, sites that start and end between them
spec = replace(timeline_spec(4), width=1024, height=1024, n_sites=6, n_lookalikes=1)
w = generate_world(sys.argv[1], spec)
print(json.dumps({"aoi": str(w.aoi), "scenes": [str(p) for p in w.scene_paths], "dates": list(w.dates)}))
"""


def engine_run(world, out, *extra):
    done = subprocess.run([str(ENGINE_PY), "-m", "groundbreak", "run", "--aoi", world["aoi"], "--scenes",
                           *world["scenes"], "--out", str(out), "--runtime", "eager", "--threads", "2",
                           "--batch-size", "8", *extra], capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    done = subprocess.run([str(ENGINE_PY), "-c", WORLD, str(root / "world")], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    info = json.loads(done.stdout.decode().strip().splitlines()[-1])
    info["root"] = str(root)
    return info


@pytest.fixture(scope="module")
def run_gpkg(world):
    """A real `groundbreak run` over the 10 dates (the engine builds the timeline at its end)."""
    out = os.path.join(world["root"], "run.gpkg")
    engine_run(world, out)
    return out


@pytest.fixture
def gpkg(run_gpkg, tmp_path):
    """A private copy (tests that rebuild the timeline write into it)."""
    path = str(tmp_path / "run.gpkg")
    shutil.copy(run_gpkg, path)
    return path


def truth(path):
    """sites and site_observations straight from the file (sqlite3, no QGIS)."""
    with sqlite3.connect(path) as conn:
        site_rows = conn.execute("SELECT site_id, start_date, end_date, ongoing, start_year FROM sites "
                                 "ORDER BY site_id").fetchall()
        obs = conn.execute("SELECT site_id, date, score, status FROM site_observations ORDER BY site_id, date"
                           ).fetchall()
        dates = [r[0] for r in conn.execute("SELECT DISTINCT date FROM site_observations ORDER BY date")]
        detections = conn.execute("SELECT date, COUNT(*) FROM detections GROUP BY date").fetchall()
    by_site = {}
    for site_id, date, score, status in obs:
        by_site.setdefault(site_id, []).append((date, score, status))
    return {"sites": {r[0]: {"start": r[1], "end": r[2], "ongoing": r[3], "year": r[4]} for r in site_rows},
            "obs": by_site, "dates": dates, "detections": dict(detections)}


def test_the_run_has_what_these_tests_need(run_gpkg, world):
    t = truth(run_gpkg)
    assert t["dates"] == world["dates"] and len(t["dates"]) == 10
    years = {s["year"] for s in t["sites"].values()}
    assert len(years) >= 2, t["sites"]  # styling by year needs more than one
    assert any(s["ongoing"] for s in t["sites"].values()) and any(not s["ongoing"] for s in t["sites"].values())
    assert any(status == "unknown" for rows in t["obs"].values() for _, _, status in rows)


def evaluate(layer, expression, feature):
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    return QgsExpression(expression).evaluate(context)


def test_sites_layer_added_into_the_group_and_styled_by_start_year(gpkg, qgis_new_project):
    project = QgsProject.instance()
    group = project.layerTreeRoot().addGroup("run x")
    layer, observations = sites.add_site_layers(gpkg, project, group)
    t = truth(gpkg)
    assert layer is not None and observations is not None
    assert [n.layer() for n in group.findLayers()] == [layer, observations]
    assert group.findLayer(layer.id()).isVisible() and not group.findLayer(observations.id()).isVisible()
    assert layer.featureCount() == len(t["sites"]) and observations.featureCount() == sum(map(len, t["obs"].values()))

    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == '"start_year"'
    years = sorted({s["year"] for s in t["sites"].values()})
    assert [c.value() for c in renderer.categories()] == years
    assert [c.label() for c in renderer.categories()] == ["started %d" % y for y in years]
    colours = [c.symbol().symbolLayer(1).strokeColor().name() for c in renderer.categories()]
    assert len(set(colours)) == len(years)  # one colour per year
    for feature in layer.getFeatures():
        expected = t["sites"][feature["site_id"]]
        category = [c for c in renderer.categories() if c.value() == expected["year"]][0]
        stroke = category.symbol().symbolLayer(1).dataDefinedProperties().property(QgsSymbolLayer.PropertyStrokeStyle)
        assert stroke.isActive()
        assert evaluate(layer, stroke.expressionString(), feature) == ("dash" if expected["ongoing"] else "solid")
        label = "%s  %s → %s" % (feature["site_id"], expected["start"], expected["end"] or "ongoing")
        assert evaluate(layer, layer.labeling().settings().fieldName, feature) == label
        assert evaluate(layer, layer.displayExpression(), feature) == label
    assert layer.labelsEnabled() and "site_id" in layer.mapTipTemplate()
    statuses = [c.value() for c in observations.renderer().categories()]
    assert statuses == [sites.ACTIVE, sites.INACTIVE, sites.UNKNOWN]


def test_each_site_is_drawn_in_its_year_colour(gpkg, qgis_new_project):
    layer, _ = sites.add_site_layers(gpkg)
    layer.setLabelsEnabled(False)  # labels would cover the pixels looked at
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    extent = layer.extent()
    extent.scale(1.05)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(800, 800))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    by_year = {c.value(): c.symbol().symbolLayer(1).strokeColor() for c in layer.renderer().categories()}
    checked = 0
    for feature in layer.getFeatures():
        inside = feature.geometry().pointOnSurface().asPoint()
        px = settings.mapToPixel().transform(inside)
        pixel = image.pixelColor(int(px.x()), int(px.y()))
        assert pixel != QColor("white"), feature["site_id"]
        # the translucent fill over white: nearest (in RGB) to its own year's colour blended the same way
        def blended(c):
            return [255 + (v - 255) * 60 / 255 for v in (c.red(), c.green(), c.blue())]
        distance = {y: sum((a - b) ** 2 for a, b in zip(blended(c), (pixel.red(), pixel.green(), pixel.blue())))
                    for y, c in by_year.items()}
        assert min(distance, key=distance.get) == feature["start_year"], (feature["site_id"], pixel.name())
        checked += 1
    assert checked == layer.featureCount() > 0


def day(iso):
    d = dt.date.fromisoformat(iso)
    return QDateTime(QDate(d.year, d.month, d.day), QTime(0, 0))


def visible(layer, begin, end):
    """Feature ids the temporal controller shows for [begin, end)."""
    rng = QgsDateTimeRange(begin, end, True, False)
    assert layer.temporalProperties().isVisibleInTemporalRange(rng)
    text = layer.temporalProperties().createFilterString(QgsVectorLayerTemporalContext(), rng)
    return list(layer.getFeatures(QgsFeatureRequest().setFilterExpression(text)))


def test_temporal_filters_show_the_sites_active_at_each_date(gpkg, qgis_new_project):
    layer, observations = sites.add_site_layers(gpkg)
    t = truth(gpkg)
    props = layer.temporalProperties()
    assert props.isActive()
    assert props.mode() == QgsVectorLayerTemporalProperties.ModeFeatureDateTimeStartAndEndFromFields
    assert (props.startField(), props.endField()) == ("start_date", "end_date")
    assert observations.temporalProperties().isActive()
    for date in t["dates"]:
        expected = {sid for sid, s in t["sites"].items()
                    if s["start"] <= date and (s["end"] is None or date < s["end"])}
        shown = {f["site_id"] for f in visible(layer, day(date), day(date).addDays(1))}
        assert shown == expected, date
        per_date = visible(observations, day(date), day(date).addDays(1))
        assert sorted(f["site_id"] for f in per_date) == sorted(t["sites"])  # one observation per site and date
        assert {f["date"].toString("yyyy-MM-dd") for f in per_date} == {date}
    # an ongoing site is open-ended: still shown years after the last date; an ended one is not
    later = {f["site_id"] for f in visible(layer, day("2030-01-01"), day("2030-01-02"))}
    assert later == {sid for sid, s in t["sites"].items() if s["ongoing"]}
    assert not visible(layer, day("2000-01-01"), day("2000-01-02"))
    # detections are temporal by their date too (the run's style)
    from plugin.live_layer import style_detections

    detections = QgsVectorLayer(gpkg + "|layername=detections", "d", "ogr")
    style_detections(detections)
    for date, count in t["detections"].items():
        assert len(visible(detections, day(date), day(date).addDays(1))) == count


def site_with_unknown_dates(t):
    return sorted((sum(1 for _, _, s in rows if s == "unknown"), sid) for sid, rows in t["obs"].items())[-1][1]


def close(a, b, tol=40):
    return all(abs(x - y) <= tol for x, y in zip((a.red(), a.green(), a.blue()), (b.red(), b.green(), b.blue())))


def test_plot_shows_a_real_sites_scores_unknown_dates_and_start(gpkg, qgis_new_project, qtbot):
    layer, observations = sites.add_site_layers(gpkg)
    t = truth(gpkg)
    site_id = site_with_unknown_dates(t)
    rows = t["obs"][site_id]
    series = sites.site_series(sites.find_site(layer, site_id), observations)
    plot = SitePlot()
    qtbot.addWidget(plot)
    plot.resize(420, 320)
    plot.set_series(series)

    known = [(d, s) for d, s, status in rows if s is not None]
    unknown = [d for d, s, status in rows if status == "unknown"]
    assert unknown and len(known) + len(unknown) == len(rows) == 10
    assert [(d.isoformat(), round(s, 5)) for d, s, _ in plot.points()] == [(d, round(s, 5)) for d, s in known]
    assert [d.isoformat() for d, _ in plot.unknown_points()] == unknown
    expected = t["sites"][site_id]
    assert series.caption == "%s · started %s (%s)" % (
        site_id, expected["start"], "ongoing" if expected["ongoing"] else "ended %s" % expected["end"])
    labels = [d.isoformat() for d in plot.date_labels()]
    assert expected["start"] in labels and (expected["end"] is None or expected["end"] in labels)

    image = plot.grab().toImage()
    background = QColor(plot.palette().base().color())
    status_of = {d: status for d, _, status in rows}
    for date, _score, centre in plot.points():
        pixel = image.pixelColor(int(round(centre.x())), int(round(centre.y())))
        assert close(pixel, ACTIVE_POINT if status_of[date.isoformat()] == "active" else INACTIVE_POINT), (
            date, pixel.name())
    for date, centre in plot.unknown_points():
        around = [image.pixelColor(int(round(centre.x() + dx)), int(round(centre.y() + dy)))
                  for r in (3, 4) for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r))]
        ring = min(around, key=lambda c: sum(c.getRgb()[:3]))  # the ring's darkest, most covered pixel
        hole = image.pixelColor(int(round(centre.x())), int(round(centre.y())))
        assert close(ring, UNKNOWN, 50) and not close(hole, UNKNOWN, 25), (date, ring.name(), hole.name())
        band = plot.unknown_band(date)
        # the band is shaded from bottom to top (a probe the score line happens to cross is not counted on)
        probes = [image.pixelColor(int(band.center().x()), int(plot.y_of(y))) for y in (0.125, 0.375, 0.625, 0.875)]
        darker = [sum(c.getRgb()[:3]) < sum(background.getRgb()[:3]) - 30 for c in probes]
        assert sum(darker) >= 3, (date, [c.name() for c in probes])
    start_x = int(round(plot.x_of(series.start)))
    assert close(image.pixelColor(start_x, int(plot.y_of(0.375))), START, 60)
    # the far left, below the first date's score and outside every band: plain background
    rect = plot.plot_rect()
    first = rows[0]
    if first[2] != "unknown" and first[0] < expected["start"]:
        probe = image.pixelColor(int(rect.left() + 3), int(plot.y_of(0.9)))
        assert probe == background, probe.name()
    # nothing drawn without a series: the hint text only
    start_y = int(plot.y_of(0.375))
    plot.set_series(None)
    empty = plot.grab().toImage()
    assert empty.pixelColor(start_x, start_y) == background


def test_the_dock_sites_tab_follows_the_selection(gpkg, qgis_iface, qgis_new_project, qtbot):
    from plugin.dock import GroundbreakDock

    dock = GroundbreakDock(qgis_iface)
    qtbot.addWidget(dock)
    try:
        layer, _ = sites.add_site_layers(gpkg)
        dock.show_sites(layer)
        t = truth(gpkg)
        assert dock.sites_layer is layer and dock.sites_layer_combo.currentLayer() is layer
        assert dock.site_list.count() == len(t["sites"])
        assert dock.tabs.tabText(dock.tabs.indexOf(dock.sites_page)) == "&Sites (%d)" % len(t["sites"])
        target = site_with_unknown_dates(t)
        feature = sites.find_site(layer, target)
        layer.selectByIds([feature.id()])  # as the map's select tool does
        assert dock.site_plot.series is not None and dock.site_plot.series.site_id == target
        assert len(dock.site_plot.unknown_points()) == sum(1 for _, _, s in t["obs"][target] if s == "unknown")
        assert dock.site_list.currentItem().text().startswith(target)
        other = [sid for sid in sorted(t["sites"]) if sid != target][0]
        row = [i for i in range(dock.site_list.count()) if dock.site_list.item(i).text().startswith(other)][0]
        dock.site_list.setCurrentRow(row)  # picking in the list selects on the map
        assert [f["site_id"] for f in layer.selectedFeatures()] == [other]
        assert dock.site_plot.series.site_id == other
        assert dock.show_site(target) and dock.site_plot.series.site_id == target
        dock.show_sites(None)
        assert dock.site_list.count() == 0 and dock.site_plot.series is None
    finally:
        dock.shutdown()


def last_timeline_params(path):
    with sqlite3.connect(path) as conn:
        return json.loads(conn.execute("SELECT params FROM timeline_runs ORDER BY id DESC LIMIT 1").fetchone()[0])


def test_processing_timeline_drives_the_engine_and_loads_styled_sites(provider, gpkg, tmp_path, qgis_new_project):
    import processing

    builds_before = sqlite3.connect(gpkg).execute("SELECT COUNT(*) FROM timeline_runs").fetchone()[0]
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    smart = tmp_path / "smart"
    result = processing.run("groundbreak:timeline", {
        "INPUT": gpkg, "ENTER": 0.9, "EXIT": 0.6, "MIN_REVISITS": 3, "SMART": str(smart),
        "ENGINE_PYTHON": str(ENGINE_PY)}, context=context, feedback=feedback)
    t = truth(gpkg)
    # the engine rebuilt the timeline with these parameters (a new timeline_runs row says so)
    assert sqlite3.connect(gpkg).execute("SELECT COUNT(*) FROM timeline_runs").fetchone()[0] == builds_before + 1
    params = last_timeline_params(gpkg)
    assert (params["enter"], params["exit"], params["min_revisits"]) == (0.9, 0.6, 3)
    assert result["SITE_COUNT"] == len(t["sites"]) and result["ONGOING"] == sum(
        s["ongoing"] for s in t["sites"].values())
    layer = QgsVectorLayer(result["SITES"], "s", "ogr")
    assert layer.isValid() and layer.featureCount() == len(t["sites"])
    assert QgsVectorLayer(result["OBSERVATIONS"], "o", "ogr").featureCount() == sum(map(len, t["obs"].values()))
    assert result["SMART_FOLDER"] == str(smart) and any(p.suffix == ".geojson" for p in smart.rglob("*"))
    # loaded when the algorithm ends (the Toolbox does this), styled by the post-processor
    to_load = context.layersToLoadOnCompletion()
    assert set(to_load) == {result["SITES"], result["OBSERVATIONS"]}
    details = to_load[result["SITES"]]
    details.postProcessor().postProcessLayer(layer, context, feedback)
    assert isinstance(layer.renderer(), QgsCategorizedSymbolRenderer)
    assert layer.temporalProperties().isActive()


def test_processing_timeline_refuses_exit_above_enter_and_reports_engine_errors(provider, gpkg, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="exit <= enter"):
        processing.run("groundbreak:timeline", {"INPUT": gpkg, "ENTER": 0.5, "EXIT": 0.8,
                                                "ENGINE_PYTHON": str(ENGINE_PY)})
    not_a_run = tmp_path / "empty.gpkg"
    not_a_run.write_bytes(b"not a geopackage")
    with pytest.raises(QgsProcessingException, match="engine timeline failed"):
        processing.run("groundbreak:timeline", {"INPUT": str(not_a_run), "ENGINE_PYTHON": str(ENGINE_PY)})


def test_qgis_process_runs_groundbreak_timeline(gpkg, tmp_path):
    from test_processing import QGIS_PROCESS, deploy_profile

    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("qgis_process.bin is not installed")
    profile = deploy_profile(tmp_path)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.write_text(ini.read_text() + "\n[groundbreak]\ninterpreter=%s\n" % ENGINE_PY)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile))
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "groundbreak:timeline", "--", "INPUT=%s" % gpkg,
                           "ENTER=0.8", "MIN_REVISITS=2", "END_REVISITS=3"], capture_output=True, env=env, timeout=600)
    stdout = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, stdout[-3000:] + done.stderr.decode("utf-8", "replace")[-3000:]
    result = json.loads(stdout[stdout.index("{"):])["results"]
    t = truth(gpkg)
    assert result["SITE_COUNT"] == len(t["sites"]) and result["SITES"] == gpkg + "|layername=sites"
    params = last_timeline_params(gpkg)
    assert (params["enter"], params["end_revisits"]) == (0.8, 3)


def test_processing_detect_over_several_dates_gives_sites(provider, world, tmp_path):
    import processing

    sandbox = SettingsSandbox()
    sandbox.set(runtime="eager")
    try:
        result = processing.run("groundbreak:detect", {
            "AOI": world["aoi"], "SCENE_FILES": ";".join(world["scenes"]), "MIN_VALID": 0.5, "BATCH_SIZE": 8,
            "THREADS": 2, "ENGINE_PYTHON": str(ENGINE_PY), "OUTPUT": str(tmp_path / "alg.gpkg")})
        single = processing.run("groundbreak:detect", {
            "AOI": world["aoi"], "SCENE_FILES": world["scenes"][0], "MIN_VALID": 0.5, "BATCH_SIZE": 8,
            "THREADS": 2, "ENGINE_PYTHON": str(ENGINE_PY), "OUTPUT": str(tmp_path / "one.gpkg")})
    finally:
        sandbox.restore()
    assert result["STATUS"] == "ok"
    t = truth(result["OUTPUT_GPKG"])
    assert result["SITE_COUNT"] == len(t["sites"]) > 0
    assert result["SITES"] == result["OUTPUT_GPKG"] + "|layername=sites"
    assert QgsVectorLayer(result["SITES"], "s", "ogr").featureCount() == len(t["sites"])
    assert single["STATUS"] == "ok" and single["SITES"] is None and single["SITE_COUNT"] == 0  # one date: no sites


def test_dock_run_over_several_dates_adds_the_sites_with_the_real_engine(world, qgis_iface, qgis_new_project,
                                                                          qtbot, tmp_path):
    from plugin.dock import GroundbreakDock

    sandbox = SettingsSandbox()
    sandbox.set(interpreter=str(ENGINE_PY), threads=2, batch_size=8, min_valid=0.5, price_per_hour=0.1,
                model_dir="", runtime="eager")
    dock = GroundbreakDock(qgis_iface)
    try:
        aoi = QgsVectorLayer(world["aoi"], "aoi", "ogr")
        QgsProject.instance().addMapLayer(aoi)
        dock.aoi_layer_combo.setLayer(aoi)
        dock.use_aoi_layer()
        dock.output_edit.setText(str(tmp_path / "run.gpkg"))
        with qtbot.waitSignal(dock.info_finished, timeout=120000):
            dock.add_scenes(world["scenes"])
        with qtbot.waitSignal(dock.run_finished, timeout=600000) as run:
            dock.run()
        state = dock.engine.state
        assert run.args[0] == "ok", (state.errors, dock.engine.stderr_text[-2000:])
        # the real engine ran over all 10 dates and built the timeline at its end (its result says so)
        timeline = state.result["stats"]["timeline"]
        t = truth(str(tmp_path / "run.gpkg"))
        assert timeline["dates"] == 10 and timeline["sites"] == len(t["sites"]) > 0
        layer = dock.sites_layer
        assert layer is not None and layer.featureCount() == len(t["sites"])
        assert layer.source() == str(tmp_path / "run.gpkg") + "|layername=sites"
        assert QgsProject.instance().mapLayer(layer.id()) is layer
        names = [n.layer().name() for n in dock.live.group.findLayers()]
        assert names[:2] == [sites.SITES_TITLE, sites.OBSERVATIONS_TITLE] and "detections" in names
        assert [c.value() for c in layer.renderer().categories()] == sorted({s["year"] for s in t["sites"].values()})
        assert "%d sites" % len(t["sites"]) in dock.stage_label.text() and "Sites tab" in dock.stage_label.text()
        assert dock.site_list.count() == len(t["sites"])
        dock.show_site(sorted(t["sites"])[0])
        assert dock.site_plot.series.site_id == sorted(t["sites"])[0] and len(dock.site_plot.series.observations) == 10
    finally:
        dock.shutdown()
        dock.deleteLater()
        sandbox.restore()
