"""The Processing provider: ``processing.run`` in-process and ``qgis_process.bin`` headless, against the
fake engine (the real engine is covered by test_e2e.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import RECORDED, REPO
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRectangle,
    QgsVectorLayer,
)

QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def aoi_layer():
    layer = QgsVectorLayer("Polygon?crs=EPSG:32614&field=name:string", "aoi", "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(500000, 5205000, 502000, 5207000)))
    feature.setAttributes(["site"])
    layer.dataProvider().addFeatures([feature])
    return layer


def params(fake_engine, tmp_path, **extra):
    out = dict(AOI=aoi_layer(), SCENE_FILES="a_20140720.tif;b_20150926.tif", MIN_VALID=0.3, BATCH_SIZE=4,
               THREADS=1, PRICE_PER_HOUR=0.2, ENGINE_PYTHON=fake_engine, OUTPUT=str(tmp_path / "detections.gpkg"))
    out.update(extra)
    return out


class CancelOnFeatures(QgsProcessingFeedback):
    def pushInfo(self, info):  # noqa: N802
        super().pushInfo(info)
        if "detections received" in info:
            self.cancel()


def test_detect_through_processing_run(provider, fake_engine, tmp_path):
    import processing

    result = processing.run("groundbreak:detect", params(fake_engine, tmp_path))
    assert result["STATUS"] == "ok" and result["DETECTIONS"] == 6
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.featureCount() == 6 and layer.crs().authid() == "EPSG:32614"
    assert {"chip_id", "date", "score", "review"} <= set(layer.fields().names())
    assert os.path.exists(result["OUTPUT_GPKG"])
    argv = json.loads((tmp_path / "argv.jsonl").read_text().splitlines()[-1])["argv"]
    assert argv[2] == "run"
    for flag, value in (("--min-valid", "0.3"), ("--batch-size", "4"), ("--threads", "1"),
                        ("--price-per-hour", "0.2"), ("--events", "jsonl")):
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--scenes") + 1:argv.index("--scenes") + 3] == ["a_20140720.tif", "b_20150926.tif"]
    aoi_path = argv[argv.index("--aoi") + 1]
    aoi = QgsVectorLayer(aoi_path, "aoi", "ogr")
    assert aoi.featureCount() == 1 and aoi.crs().authid() == "EPSG:32614"


def test_cancel_is_bound_to_the_feedback(provider, fake_engine, tmp_path, monkeypatch):
    import processing

    monkeypatch.setenv("GB_FAKE_DELAY", "0.2")
    feedback = CancelOnFeatures()
    result = processing.run("groundbreak:detect", params(fake_engine, tmp_path), feedback=feedback)
    assert result["STATUS"] == "cancelled"
    assert 1 <= result["DETECTIONS"] < 6


def test_progress_reaches_the_feedback(provider, fake_engine, tmp_path):
    import processing

    seen = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(seen.append)
    processing.run("groundbreak:detect", params(fake_engine, tmp_path), feedback=feedback)
    assert seen and max(seen) == pytest.approx(100.0)


def test_engine_error_raises_with_the_hint(provider, fake_engine, tmp_path, monkeypatch):
    import processing

    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "run_error.jsonl"))
    monkeypatch.setenv("GB_FAKE_EXIT", "1")
    with pytest.raises(QgsProcessingException, match="--band-order"):
        processing.run("groundbreak:detect", params(fake_engine, tmp_path))


def test_plan_through_processing_run(provider, fake_engine, tmp_path):
    import processing

    p = params(fake_engine, tmp_path)
    del p["OUTPUT"]
    result = processing.run("groundbreak:plan", p)
    assert result["CHIPS_PLANNED"] == 16 and result["CHIPS_EXPECTED_INFERRED"] == 13
    assert result["AOI_KM2"] == pytest.approx(4.19) and result["RUN_USD"] > 0
    assert "16 chips" in result["SUMMARY"]


def deploy_profile(tmp_path):
    """Builds the plugin zip and installs it into a fresh QGIS profile, enabled."""
    sys.path.insert(0, str(REPO / "scripts"))
    import build_plugin

    zip_path = build_plugin.build(tmp_path / "dist", engine=False)
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngroundbreak=true\n")
    return profile


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process.bin is not installed")
def test_detect_headless_through_qgis_process(fake_engine, tmp_path):
    profile = deploy_profile(tmp_path)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "urn:ogc:def:crs:EPSG::32614"}}, "features": [{"type": "Feature", "properties": {"name": "site"},
        "geometry": {"type": "Polygon", "coordinates": [[[500000, 5205000], [502000, 5205000], [502000, 5207000],
                                                         [500000, 5207000], [500000, 5205000]]]}}]}))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile))
    out = tmp_path / "headless.gpkg"
    done = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "groundbreak:detect", "--", "AOI=%s" % aoi, "SCENE_FILES=a_20140720.tif",
         "ENGINE_PYTHON=%s" % fake_engine, "MIN_VALID=0.5", "BATCH_SIZE=8", "OUTPUT=%s" % out],
        capture_output=True, env=env, timeout=180)
    stdout = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, stdout[-2000:] + done.stderr.decode("utf-8", "replace")[-2000:]
    result = json.loads(stdout[stdout.index("{"):])
    assert result["results"]["STATUS"] == "ok" and result["results"]["DETECTIONS"] == 6
    layer = QgsVectorLayer(str(out), "out", "ogr")
    assert layer.isValid() and layer.featureCount() == 6


def test_detect_inside_a_processing_model(provider, fake_engine, tmp_path):
    """The Modeler's view: groundbreak:detect as a child algorithm of a model."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
    )

    model = QgsProcessingModelAlgorithm("construction model", "tests")
    model.addModelParameter(QgsProcessingParameterFeatureSource("aoi", "AOI"), QgsProcessingModelParameter("aoi"))
    child = QgsProcessingModelChildAlgorithm("groundbreak:detect")
    child.setChildId("detect")
    child.addParameterSources("AOI", [QgsProcessingModelChildParameterSource.fromModelParameter("aoi")])
    for name, value in (("SCENE_FILES", "a_20140720.tif"), ("ENGINE_PYTHON", fake_engine), ("MIN_VALID", 0.5),
                        ("BATCH_SIZE", 8), ("THREADS", 2), ("PRICE_PER_HOUR", 0.1)):
        child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    output = QgsProcessingModelOutput("detections", "Detections")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"detections": output})
    model.addChildAlgorithm(child)
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(model, {"aoi": aoi_layer(), "detect:detections": str(tmp_path / "model_out.gpkg")})
    layer = QgsVectorLayer(result["detect:detections"], "out", "ogr")
    assert layer.isValid() and layer.featureCount() == 6
