"""The output GeoPackage: layers GDAL reads, atomic batches, one row per (scene, chip), extents."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pyogrio
import pytest
import shapely

from groundbreak.errors import CorruptFileError, OutputError
from groundbreak.grid import ChipGrid
from groundbreak.store import CHIP_FIELDS, DETECTION_FIELDS, ChipRecord, DetectionRecord, DetectionStore

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)


def _chip(col: int, row: int, *, scene: str = "s1", status: str = "inferred", score=0.7) -> ChipRecord:
    return ChipRecord(
        chip_id=GRID.chip_id(col, row), aoi_id="a", scene_id=scene, date="2024-05-01", status=status,
        valid_fraction=0.9, screened_by="exact", geometry_wkb=shapely.to_wkb(GRID.polygon(col, row)),
        score=score if status == "inferred" else None, detail="" if status != "failed" else "boom",
    )


def _det(col: int, row: int, *, scene: str = "s1", score: float = 0.7, wkb=None) -> DetectionRecord:
    return DetectionRecord(
        chip_id=GRID.chip_id(col, row), aoi_id="a", scene_id=scene, date="2024-05-01", score=score,
        label="construction", model_id="m",
        geometry_wkb=wkb if wkb is not None else shapely.to_wkb(GRID.polygon(col, row)),
    )


def _rows(path, sql):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    s = DetectionStore(tmp_path / "out.gpkg", epsg=GRID.epsg)
    yield s
    s.close()


def test_layers_fields_and_crs_as_gdal_sees_them(store):
    store.commit([_chip(977, 10175), _chip(978, 10175, status="dropped-cloud")], [_det(977, 10175)], run_id="r1")
    store.finalize()
    path = str(store.path)
    layers = {name: geom for name, geom in pyogrio.list_layers(path)}
    assert layers["detections"] == "Polygon" and layers["chips"] == "Polygon"
    assert "runs" in layers  # an attribute table, listed by GDAL
    for layer, fields in (("detections", DETECTION_FIELDS), ("chips", CHIP_FIELDS)):
        info = pyogrio.read_info(path, layer=layer)
        assert list(info["fields"]) == [n for n, _ in fields]
        assert info["crs"] == "EPSG:32614"
    info = pyogrio.read_info(path, layer="detections")
    assert info["features"] == 1
    assert {"chip_id", "aoi_id", "scene_id", "date", "score", "label", "model_id"} <= set(info["fields"])
    meta, _, geoms, values = pyogrio.raw.read(path, layer="detections")
    assert shapely.from_wkb(geoms[0]).equals(GRID.polygon(977, 10175))
    fields = dict(zip(meta["fields"], (v[0] for v in values)))
    assert fields["chip_id"] == "32614_512_977_10175" and fields["score"] == pytest.approx(0.7)
    assert fields["run_id"] == "r1"


def test_spatial_index_and_extents_after_finalize(store):
    store.commit([_chip(c, 10175) for c in range(977, 981)], [_det(980, 10175)], run_id="r1")
    store.finalize()
    path = str(store.path)
    x0, y0, _, y1 = GRID.bounds(977, 10175)
    x1 = GRID.bounds(980, 10175)[2]
    extents = _rows(store.path, "SELECT table_name, min_x, min_y, max_x, max_y FROM gpkg_contents")
    rows = {r[0]: r[1:] for r in extents}
    assert rows["chips"] == pytest.approx((x0, y0, x1, y1))
    assert rows["detections"] == pytest.approx(GRID.bounds(980, 10175))
    assert pyogrio.read_info(path, layer="chips")["total_bounds"] == pytest.approx((x0, y0, x1, y1))
    # GDAL's R-tree triggers ran during our sqlite3 inserts: a bbox query finds exactly one chip.
    _, _, geoms, values = pyogrio.raw.read(path, layer="chips", bbox=GRID.polygon(978, 10175).buffer(-10).bounds)
    assert list(values[0]) == [GRID.chip_id(978, 10175)]


def test_a_batch_is_atomic(store, tmp_path):
    store.commit([_chip(977, 10175)], [], run_id="r1")
    # A failure after the batch's chips went in (a detection that cannot be encoded) must leave
    # neither the chips nor the detections of that batch, and the store usable.
    bad = _det(979, 10175, wkb=b"\x00garbage")
    with pytest.raises(shapely.errors.GEOSException):  # the detection's WKB cannot be parsed
        store.commit([_chip(978, 10175), _chip(979, 10175)], [_det(978, 10175), bad], run_id="r1")
    assert _rows(store.path, "SELECT chip_id FROM chips") == [(GRID.chip_id(977, 10175),)]
    assert _rows(store.path, "SELECT COUNT(*) FROM detections") == [(0,)]
    store.commit([_chip(980, 10175)], [_det(980, 10175)], run_id="r1")
    assert sorted(r[0] for r in _rows(store.path, "SELECT chip_id FROM chips")) == [
        GRID.chip_id(977, 10175), GRID.chip_id(980, 10175)]
    assert store.counts()["detections"] == 1


def test_one_row_per_scene_and_chip(store):
    store.commit([_chip(977, 10175, status="failed")], [], run_id="r1")
    assert store.finished_keys() == set()  # failed chips are retried
    assert store.failed_chips() == [("s1", GRID.chip_id(977, 10175), "boom")]
    store.commit([_chip(977, 10175, score=0.2), _chip(977, 10175, scene="s2")], [], run_id="r1")
    assert store.finished_keys() == {("s1", GRID.chip_id(977, 10175)), ("s2", GRID.chip_id(977, 10175))}
    assert store.counts()["inferred"] == 2 and store.counts()["failed"] == 0
    # The database itself refuses a second row (not only the engine's INSERT OR REPLACE).
    unique = [r for r in _rows(store.path, "PRAGMA index_list(chips)") if r[2] == 1]
    cols = [[c[2] for c in _rows(store.path, "PRAGMA index_info(%s)" % r[1])] for r in unique]
    assert ["scene_id", "chip_id"] in cols


def test_runs_table_records_attempts(store):
    a1 = store.start_attempt(run_id="r1", fingerprint="f", started="t0",
                             row={"params": {"min_valid": 0.5}, "model_demo": True})
    store.finish_attempt("r1", a1, status="cancelled", finished="t1", row={"stats": {"chips_inferred": 3}})
    a2 = store.start_attempt(run_id="r1", fingerprint="f", started="t2", row={})
    assert (a1, a2) == (1, 2)
    rows = _rows(store.path, "SELECT attempt, status, params, stats, model_demo FROM runs ORDER BY attempt")
    assert rows[0] == (1, "cancelled", '{"min_valid": 0.5}', '{"chips_inferred": 3}', 1)
    assert rows[1][:2] == (2, "running")
    assert store.fingerprints() == ["f"]


def test_reopening_an_existing_output(tmp_path):
    path = tmp_path / "out.gpkg"
    DetectionStore(path, epsg=32614).close()
    DetectionStore(path, epsg=32614).close()  # resume: fine
    with pytest.raises(OutputError, match="EPSG:32614") as info:
        DetectionStore(path, epsg=32613)
    assert "--overwrite" in info.value.hint


def test_a_foreign_geopackage_is_refused(tmp_path):
    path = tmp_path / "other.gpkg"
    pyogrio.raw.write(str(path), np.array([shapely.to_wkb(GRID.polygon(0, 0))], dtype=object), [], fields=[],
                      crs="EPSG:32614", geometry_type="Polygon", layer="parcels", driver="GPKG")
    with pytest.raises(OutputError, match="not a Groundbreak output"):
        DetectionStore(path, epsg=32614)


def test_garbage_output_file(tmp_path):
    path = tmp_path / "out.gpkg"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(CorruptFileError):
        DetectionStore(path, epsg=32614)


def test_missing_or_unwritable_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        DetectionStore(tmp_path / "nope" / "out.gpkg", epsg=32614)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(OutputError, match="cannot write"):
            DetectionStore(locked / "out.gpkg", epsg=32614)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_an_unwritable_place_is_an_output_error(tmp_path, where):
    # Regression: GDAL's DataSourceError escaped as a traceback. Works as root too (no chmod).
    if where == "file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out.gpkg"
    else:
        target = "/proc/groundbreak-test-out.gpkg"
    with pytest.raises(OutputError, match="cannot create") as info:
        DetectionStore(target, epsg=32614)
    assert info.value.hint
