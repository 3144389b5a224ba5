"""The in-process run: screening counts, consistent figures, detections, events, determinism,
cancel and resume, failed chips."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

from groundbreak.aoi import read_aois
from groundbreak.errors import BandMismatchError, OutputError
from groundbreak.grid import grid_for
from groundbreak.model import load_model_package
from groundbreak.pipeline import RunOptions, run_detection
from groundbreak.plan import make_plan
from groundbreak.protocol import encode, parse_line
from groundbreak.reporter import CancelToken, Reporter
from groundbreak.scene import discover_scenes

X0, Y1 = ORIGIN
C0, R1 = int(X0 // 512), int(Y1 // 512)


def with_threshold(package: Path, out: Path, threshold: float) -> Path:
    """A copy of a model package with another detection threshold (same weights)."""
    shutil.copytree(package, out)
    doc = json.loads((out / "model.json").read_text())
    doc["properties"]["groundbreak:threshold"] = threshold
    (out / "model.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    # A threshold inside the random scores' spread, so runs have detections and non-detections.
    return load_model_package(with_threshold(tiny_model, tmp_path_factory.mktemp("model") / "m", 0.4))


def write_mask(scene_path: Path, mask: np.ndarray) -> Path:
    """A Groundbreak class sidecar (1 cloud, 2 shadow, 255 nodata) on the scene's grid."""
    with rasterio.open(scene_path) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
    out = scene_path.with_name(scene_path.stem + "_mask.tif")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(mask[None].astype(np.uint8))
    return out


def screening_scene(folder: Path, name: str = "s_20240501.tif", seed: int = 0) -> Path:
    """1024 × 768 px (4 × 3 chips): chip (i, j) is i columns east, j rows south.

    (0, *) nodata edge; (1, 0) cloud; (3, 1) shadow; (2, 1) 51% cloud -> 0.488 valid;
    (2, 2) exactly half cloud -> 0.5 valid. Six chips are fully valid.
    """
    path = write_scene(folder / name, size=(1024, 768), nodata_cols=256, seed=seed)
    mask = np.zeros((768, 1024), np.uint8)
    mask[0:256, 256:512] = 1
    mask[256:512, 768:1024] = 2
    mask[256:387, 512:768] = 1
    mask[512:640, 512:768] = 1
    write_mask(path, mask)
    return path


def make_inputs(folder: Path, scenes, model, *, aoi=None):
    aoi_path = write_aoi(folder / "aoi.geojson", [aoi or box(X0 + 10, Y1 - 1526, X0 + 2038, Y1 - 10)], ids=["site"])
    aois, _ = read_aois([str(aoi_path)])
    found = discover_scenes([str(p) for p in scenes])
    grid = grid_for([a.geometry for a in aois], chip_px=model.chip_size, gsd=model.gsd)
    return make_plan(aois, found, grid)


def chips_of(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        return sorted(conn.execute(
            "SELECT scene_id, chip_id, aoi_id, date, status, round(valid_fraction, 4), score FROM chips"))
    finally:
        conn.close()


def detections_of(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        return sorted(conn.execute(
            "SELECT scene_id, chip_id, aoi_id, date, score, label, model_id FROM detections"))
    finally:
        conn.close()


def run(plan, model, out, **kw):
    events = []
    reporter = Reporter(listener=events.append)
    cancel = kw.pop("cancel", None)
    options = RunOptions(runtime="eager", **kw)
    result = run_detection(plan, model, out, options=options, reporter=reporter, cancel=cancel)
    return result, events


def test_screening_counts_and_consistent_figures(tmp_path, model):
    plan = make_inputs(tmp_path, [screening_scene(tmp_path)], model)
    assert plan.chips_planned == 12
    result, events = run(plan, model, tmp_path / "out.gpkg")
    s = result.stats
    assert result.status == "ok" and result.exit_code == 0
    assert s.chips_dropped == {"nodata": 3, "cloud": 2, "shadow": 1}
    assert s.chips_inferred == 6 and s.chips_failed == 0
    assert s.chips_planned == sum(s.chips_dropped.values()) + s.chips_inferred + s.chips_failed
    rows = chips_of(tmp_path / "out.gpkg")
    assert len(rows) == 12
    by_cell = {r[1]: r for r in rows}

    def status(i, j):
        return by_cell["32614_512_%d_%d" % (C0 + i, R1 - 1 - j)][4]

    assert [status(0, j) for j in range(3)] == ["dropped-nodata"] * 3
    assert status(1, 0) == "dropped-cloud" and status(2, 1) == "dropped-cloud"
    assert status(3, 1) == "dropped-shadow"
    assert status(2, 2) == "inferred"  # exactly --min-valid is kept
    assert by_cell["32614_512_%d_%d" % (C0 + 2, R1 - 3)][5] == 0.5
    # Inferred chips have a score, dropped ones none.
    assert all((r[6] is not None) == (r[4] == "inferred") for r in rows)
    # Detections are exactly the inferred chips scoring at least the model's threshold.
    dets = detections_of(tmp_path / "out.gpkg")
    expected = sorted((r[0], r[1], r[2], r[3]) for r in rows if r[4] == "inferred" and r[6] >= model.threshold)
    assert [d[:4] for d in dets] == expected
    assert 0 < len(dets) < 6, "pick a threshold inside the scores' spread"
    assert all(d[5] == model.positive_class and d[6] == model.model_id for d in dets)
    assert s.detections == len(dets)
    # The result the CLI sends is the same figures, and every event is valid on the wire.
    last = [e for e in events if e.type == "progress"][-1]
    assert last.get("done") == last.get("total") == 12
    assert last.get("counts")["inferred"] == 6 and last.get("counts")["detections"] == len(dets)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for e in events:
        assert parse_line(encode(e)).type == e.type
    features = [f for e in events if e.type == "features" for f in e.get("features")]
    assert sorted((f["properties"]["scene_id"], f["properties"]["chip_id"]) for f in features) == [d[:2] for d in dets]
    assert all(e.get("crs") == "EPSG:32614" for e in events if e.type == "features")
    # Cost and rates are present and coherent.
    assert s.aoi_km2 == pytest.approx(2.028 * 1.516, rel=0.01)
    assert result.cost.run_usd == pytest.approx(result.cost.seconds / 3600 * result.cost.price_per_hour)
    assert s.chips_processed == 12 and s.chips_per_s > 0
    # Everything the issue asks the summary to state is in the result.
    assert s.km2_per_h > 0 and s.cpu_seconds > 0 and s.seconds > 0 and s.peak_rss_mb > 0
    assert result.cost.per_km2_usd > 0 and result.cost.run_usd > 0
    assert s.scanned_km2 == pytest.approx(s.aoi_km2, rel=0.01)  # one scene covering the AOI


@pytest.mark.parametrize("min_valid, inferred", [(0.0, 12), (0.48, 7), (1.0, 5)])
def test_min_valid_edges(tmp_path, model, min_valid, inferred):
    plan = make_inputs(tmp_path, [screening_scene(tmp_path)], model)
    result, _ = run(plan, model, tmp_path / "out.gpkg", min_valid=min_valid)
    assert result.stats.chips_inferred == inferred
    assert result.stats.chips_inferred + sum(result.stats.chips_dropped.values()) == 12


@pytest.mark.slow
def test_two_runs_give_the_same_records(tmp_path, model):
    scenes = [screening_scene(tmp_path), write_scene(tmp_path / "s_20240601.tif", origin=(X0 + 3, Y1 - 2), seed=1,
                                                      size=(1024, 768))]
    plan = make_inputs(tmp_path, scenes, model)
    run(plan, model, tmp_path / "a.gpkg", batch_size=5)
    run(plan, model, tmp_path / "b.gpkg", batch_size=32)
    a, b = chips_of(tmp_path / "a.gpkg"), chips_of(tmp_path / "b.gpkg")
    assert [r[:6] for r in a] == [r[:6] for r in b]
    np.testing.assert_allclose([r[6] or -1 for r in a], [r[6] or -1 for r in b], atol=1e-5)
    assert [d[:4] for d in detections_of(tmp_path / "a.gpkg")] == [d[:4] for d in detections_of(tmp_path / "b.gpkg")]
    # The shifted date has the same chip ids (read through the warped view).
    ids = {}
    for r in a:
        ids.setdefault(r[0], set()).add(r[1])
    assert ids["s_20240501"] == ids["s_20240601"]


def test_cancel_keeps_what_was_written_and_a_rerun_completes(tmp_path, model):
    plan = make_inputs(tmp_path, [screening_scene(tmp_path)], model)
    run(plan, model, tmp_path / "full.gpkg")
    cancel = CancelToken()
    events = []

    def on_event(e):
        events.append(e)
        if e.type == "progress" and e.get("counts")["inferred"] >= 2:
            cancel.cancel("test")

    options = RunOptions(runtime="eager", batch_size=2)
    result = run_detection(plan, model, tmp_path / "out.gpkg", options=options, reporter=Reporter(listener=on_event),
                           cancel=cancel)
    assert result.status == "cancelled" and result.exit_code == 0
    partial = chips_of(tmp_path / "out.gpkg")
    assert 2 <= sum(r[4] == "inferred" for r in partial) < 6
    full = chips_of(tmp_path / "full.gpkg")
    assert set(r[:6] for r in partial) <= set(r[:6] for r in full)
    result2, _ = run(plan, model, tmp_path / "out.gpkg")
    assert result2.status == "ok"
    assert result2.stats.chips_resumed == len(partial)
    assert result2.stats.chips_processed == 12 - len(partial)
    assert [r[:6] for r in chips_of(tmp_path / "out.gpkg")] == [r[:6] for r in full]
    resumed_dets = [d[:4] for d in detections_of(tmp_path / "out.gpkg")]
    assert resumed_dets == [d[:4] for d in detections_of(tmp_path / "full.gpkg")]
    conn = sqlite3.connect(str(tmp_path / "out.gpkg"))
    assert [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY attempt")] == ["cancelled", "ok"]
    conn.close()


def corrupt_tile(path: Path, col: int, row: int) -> None:
    """Overwrite the inside of one internal tile with garbage (DEFLATE then fails to decode)."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_%d_%d" % (col, row), "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_%d_%d" % (col, row), "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        fh.write(np.random.default_rng(0).integers(0, 256, size - 32, dtype=np.uint8).tobytes())
    with rasterio.open(path) as src:
        with pytest.raises(rasterio.errors.RasterioIOError):
            src.read(window=rasterio.windows.Window(col * 256, row * 256, 256, 256))
        src.read(window=rasterio.windows.Window(0, 0, 256, 256))  # the rest still reads


def test_a_corrupt_tile_fails_its_chip_only(tmp_path, model):
    path = write_scene(tmp_path / "s_20240501.tif", size=(1024, 768))
    original = path.read_bytes()
    corrupt_tile(path, 2, 1)
    plan = make_inputs(tmp_path, [path], model)
    result, _ = run(plan, model, tmp_path / "out.gpkg")
    assert result.status == "partial" and result.exit_code == 3
    bad = "32614_512_%d_%d" % (C0 + 2, R1 - 2)
    assert [(scene, chip) for scene, chip, _ in result.failed] == [("s_20240501", bad)]
    assert "s_20240501" in result.failed[0][2] and "window" in result.failed[0][2]
    assert result.stats.chips_failed == 1 and result.stats.chips_inferred == 11
    rows = chips_of(tmp_path / "out.gpkg")
    assert [r[1] for r in rows if r[4] == "failed"] == [bad]
    # Re-running on the same (still corrupt) file retries only that chip, and records it once.
    again, _ = run(plan, model, tmp_path / "out.gpkg")
    assert again.stats.chips_processed == 1 and again.status == "partial"
    assert len(chips_of(tmp_path / "out.gpkg")) == 12
    # Once the file is repaired, the same command finishes the job.
    path.write_bytes(original)
    fixed, _ = run(make_inputs(tmp_path, [path], model), model, tmp_path / "out.gpkg")
    assert fixed.status == "ok" and fixed.stats.chips_processed == 1
    assert [r[4] for r in chips_of(tmp_path / "out.gpkg")] == ["inferred"] * 12


def test_a_corrupt_mask_tile_fails_its_chip_only(tmp_path, model):
    # Regression: the decimated mask read covers the whole work unit, and its ReadError used to
    # end the run (exit 1) instead of failing the one chip whose mask cannot be read.
    path = write_scene(tmp_path / "s_20240501.tif", size=(1024, 768))
    noise = (np.random.default_rng(0).random((768, 1024)) < 0.02).astype(np.uint8)  # incompressible
    mask = write_mask(path, noise)
    corrupt_tile(mask, 2, 1)
    plan = make_inputs(tmp_path, [path], model)
    from groundbreak.estimate import estimate

    assert estimate(plan, model, min_valid=0.5, threads=1, price_per_hour=0.1).chips_planned == 12
    result, _ = run(plan, model, tmp_path / "out.gpkg")
    assert result.status == "partial" and result.exit_code == 3
    assert [chip for _, chip, _ in result.failed] == ["32614_512_%d_%d" % (C0 + 2, R1 - 2)]
    assert "_mask.tif" in result.failed[0][2]
    assert result.stats.chips_inferred == 11


def test_a_different_run_into_the_same_output_is_refused(tmp_path, model):
    plan = make_inputs(tmp_path, [screening_scene(tmp_path)], model)
    run(plan, model, tmp_path / "out.gpkg")
    with pytest.raises(OutputError, match="different run") as info:
        run(plan, model, tmp_path / "out.gpkg", min_valid=0.7)
    assert "--overwrite" in info.value.hint
    result, _ = run(plan, model, tmp_path / "out.gpkg", min_valid=0.7, overwrite=True)
    assert result.stats.chips_resumed == 0 and result.status == "ok"


def test_band_mismatch_stops_before_any_output(tmp_path, model):
    path = write_scene(tmp_path / "rgb_20240501.tif", count=3)
    plan = make_inputs(tmp_path, [path], model)
    with pytest.raises(BandMismatchError) as info:
        run(plan, model, tmp_path / "out.gpkg")
    assert "nir" in str(info.value)
    assert not (tmp_path / "out.gpkg").exists()


def test_runs_table_provenance(tmp_path, model):
    plan = make_inputs(tmp_path, [screening_scene(tmp_path)], model)
    result, _ = run(plan, model, tmp_path / "out.gpkg", price_per_hour=1.5)
    conn = sqlite3.connect(str(tmp_path / "out.gpkg"))
    row = conn.execute("SELECT run_id, status, model_id, model_sha256, model_demo, params, inputs, stats, cost, "
                       "versions, finished FROM runs").fetchone()
    conn.close()
    assert row[0] == result.stats.run_id and row[1] == "ok"
    assert row[2] == model.model_id and row[3] == model.sha256 and row[4] == 1
    params, inputs, stats, cost, versions = (json.loads(v) for v in row[5:10])
    assert params["min_valid"] == 0.5 and params["price_per_hour"] == 1.5 and params["grid_epsg"] == 32614
    assert inputs["scenes"][0]["quick_hash"] and inputs["aois"][0]["aoi_id"] == "site"
    assert stats["chips_inferred"] == 6 and cost["price_per_hour"] == 1.5
    assert {"groundbreak", "rasterio", "gdal", "torch"} <= set(versions)
    assert row[10]


def test_a_changed_scene_file_resumes_the_same_run_with_a_warning(tmp_path, model):
    scene = screening_scene(tmp_path)
    out = tmp_path / "out.gpkg"
    cancel = CancelToken()

    def stop_after_first_batch(event):
        if event.type == "progress" and event.get("done") > 0:
            cancel.cancel("test: stop after the first committed batch")

    first = run_detection(make_inputs(tmp_path, [scene], model), model, out,
                          options=RunOptions(runtime="eager", batch_size=2),
                          reporter=Reporter(listener=stop_after_first_batch), cancel=cancel)
    assert first.status == "cancelled" and 0 < first.stats.chips_processed < 12
    with rasterio.open(scene, "r+") as dst:  # e.g. the file was repaired: its header bytes change
        dst.update_tags(REPAIRED="yes")
    reporter = Reporter()
    second = run_detection(make_inputs(tmp_path, [scene], model), model, out,
                           options=RunOptions(runtime="eager"), reporter=reporter)
    assert second.status == "ok"
    assert second.stats.run_id == first.stats.run_id
    assert [w["code"] for w in reporter.warnings].count("scene_changed") == 1
    assert second.stats.chips_resumed == first.stats.chips_processed
    assert second.stats.chips_planned == second.stats.chips_processed + second.stats.chips_resumed


def test_activity_footprint_is_the_union_of_active_cells():
    from groundbreak.grid import ChipGrid
    from groundbreak.pipeline import activity_footprint

    grid = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
    cells = np.zeros((16, 16), np.float32)
    cells[0, 0] = 0.9  # north-west corner cell
    cells[5:7, 8] = 0.7  # two cells, one above the other
    geom, n = activity_footprint(grid, 10, 20, cells)
    assert n == 3 and geom.geom_type == "MultiPolygon" and len(geom.geoms) == 2
    assert geom.area == pytest.approx(3 * 32 * 32)
    left, top = 10 * 512, 21 * 512
    assert geom.covers(box(left, top - 32, left + 32, top))
    assert geom.covers(box(left + 8 * 32, top - 7 * 32, left + 9 * 32, top - 5 * 32))
    assert grid.polygon(10, 20).covers(geom)
    # No cell over the threshold: the single most active cell stands for the detection.
    quiet = np.full((16, 16), 0.1, np.float32)
    quiet[15, 15] = 0.3
    geom, n = activity_footprint(grid, 10, 20, quiet)
    assert n == 1 and geom.equals(shapely_box_multi(left + 15 * 32, top - 512, left + 512, top - 15 * 32))


def shapely_box_multi(*bounds):
    import shapely

    return shapely.MultiPolygon([box(*bounds)])


def test_every_detection_has_its_activity_inside_its_chip(tmp_path, model):
    import pyogrio
    import shapely

    scene = screening_scene(tmp_path)
    out = tmp_path / "out.gpkg"
    result = run_detection(make_inputs(tmp_path, [scene], model), model, out, options=RunOptions(runtime="eager"))
    assert result.stats.detections > 0
    info = pyogrio.read_info(out, layer="activity")
    assert info["geometry_type"] == "MultiPolygon" and info["crs"] == "EPSG:32614"
    conn = sqlite3.connect(out)
    dets = {(c, s): g for c, s, g in conn.execute("SELECT chip_id, scene_id, geom FROM detections")}
    acts = conn.execute("SELECT chip_id, scene_id, cells, area_m2, geom FROM activity").fetchall()
    assert len(acts) == len(dets)
    for chip_id, scene_id, cells, area, blob in acts:
        chip = shapely.from_wkb(dets[(chip_id, scene_id)][40:])
        act = shapely.from_wkb(blob[40:])
        assert chip.buffer(1e-6).covers(act)
        assert area == pytest.approx(act.area) == pytest.approx(cells * 32 * 32)
