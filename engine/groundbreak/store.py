"""The run's GeoPackage: detections, every planned chip's status, and the runs table.

GDAL (through pyogrio) creates the layers, so the file is a standard GeoPackage with spatial
indexes that QGIS opens directly. Rows are then written with the standard library's sqlite3, one
transaction per batch: a batch's chips *and* its detections commit together or not at all. That
single transaction is what makes a killed run resumable without losses or duplicates: the
``chips`` layer doubles as the run ledger (a (scene, chip) pair in it is finished).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import pyogrio
import pyogrio.errors
import shapely
from shapely.geometry.base import BaseGeometry
from pyogrio.raw import write as ogr_write

from .errors import CorruptFileError, OutputError
from .names import CHIP_STATUSES

log = logging.getLogger(__name__)

DETECTION_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("chip_id", "str"),
    ("aoi_id", "str"),
    ("scene_id", "str"),
    ("date", "str"),
    ("score", "float"),
    ("label", "str"),
    ("model_id", "str"),
    ("run_id", "str"),
    ("review", "str"),
)
CHIP_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("chip_id", "str"),
    ("aoi_id", "str"),
    ("scene_id", "str"),
    ("date", "str"),
    ("status", "str"),
    ("valid_fraction", "float"),
    ("screened_by", "str"),
    ("score", "float"),
    ("run_id", "str"),
    ("detail", "str"),
)
#: Where inside a detected chip the model sees activity: the union of its coarse cells (16×16 of
#: 32 m at 2 m GSD) scoring at least the cell threshold. Tighter than the 512 m chip square.
ACTIVITY_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("chip_id", "str"),
    ("aoi_id", "str"),
    ("scene_id", "str"),
    ("date", "str"),
    ("score", "float"),
    ("cells", "int"),
    ("area_m2", "float"),
    ("model_id", "str"),
    ("run_id", "str"),
)
STATUSES = CHIP_STATUSES


@dataclass(frozen=True, slots=True)
class ChipRecord:
    chip_id: str
    aoi_id: str
    scene_id: str
    date: str
    status: str
    valid_fraction: float
    screened_by: str  # "prefilter" (decimated mask) or "exact" (full resolution)
    geometry_wkb: bytes
    score: Optional[float] = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DetectionRecord:
    chip_id: str
    aoi_id: str
    scene_id: str
    date: str
    score: float
    label: str
    model_id: str
    geometry_wkb: bytes
    #: MultiPolygon of the active cells (grid CRS), or None when the model has no cell map.
    activity_wkb: Optional[bytes] = None
    active_cells: int = 0


class DetectionStore:
    """Open (creating if needed) the output GeoPackage of one run."""

    def __init__(self, path: Path, *, epsg: int) -> None:
        self.path = Path(path)
        self.epsg = epsg
        if not self.path.exists():
            self._create()
        self._conn = self._connect()
        self._srs_id = self._layer_srs("detections")
        if self._srs_id != epsg:
            raise OutputError(
                "%s holds detections in EPSG:%s, but this run's grid is EPSG:%d" % (self.path, self._srs_id, epsg),
                hint="write to a new --out file, or pass --overwrite",
            )

    # -- creation -----------------------------------------------------------------------------
    def _create(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            raise OutputError(
                "output folder %s does not exist" % parent, hint="create it first or choose another --out"
            )
        if not os.access(parent, os.W_OK):
            raise OutputError(
                "cannot write in %s (permission denied)" % parent, hint="choose a writable --out location"
            )
        tmp = self.path.with_name(self.path.stem + ".creating.gpkg")
        if tmp.exists():
            tmp.unlink()
        crs = "EPSG:%d" % self.epsg
        try:
            for layer, fields, gtype in (("detections", DETECTION_FIELDS, "Polygon"),
                                         ("chips", CHIP_FIELDS, "Polygon"),
                                         ("activity", ACTIVITY_FIELDS, "MultiPolygon")):
                ogr_write(
                    str(tmp),
                    np.array([], dtype=object),
                    [np.array([], dtype={"float": np.float64, "int": np.int32}.get(t, object)) for _, t in fields],
                    fields=[n for n, _ in fields],
                    layer=layer,
                    driver="GPKG",
                    geometry_type=gtype,
                    crs=crs,
                    append=tmp.exists(),
                    # 1.3, not GDAL's default 1.4: QGIS 3.22's GDAL 3.6 warns on 1.4 files.
                    dataset_options=None if tmp.exists() else {"VERSION": "1.3"},
                )
            conn = sqlite3.connect(str(tmp))
            with conn:
                conn.execute(
                    "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, "
                    "attempt INTEGER NOT NULL, status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, "
                    "fingerprint TEXT NOT NULL, command TEXT, engine_version TEXT, model_id TEXT, "
                    "model_sha256 TEXT, model_demo INTEGER, params TEXT, inputs TEXT, stats TEXT, cost TEXT, "
                    "timings TEXT, versions TEXT)"
                )
                conn.execute(
                    "INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
                    "VALUES ('runs', 'attributes', 'runs', 'Groundbreak run provenance')"
                )
                conn.execute('CREATE UNIQUE INDEX chips_scene_chip ON chips (scene_id, chip_id)')
                conn.execute('CREATE INDEX detections_chip ON detections (chip_id, date)')
            conn.close()
            os.replace(tmp, self.path)
        except (OSError, sqlite3.Error, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            # GDAL reports an unwritable place (read-only file system, a file where the folder
            # should be) as its own error types, not OSError.
            raise OutputError("cannot create %s: %s" % (self.path, exc), hint="choose a writable --out") from None
        finally:
            if tmp.exists():
                tmp.unlink()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            # GDAL's R-tree triggers call these SQL functions; sqlite3 must provide them too.
            conn.create_function("ST_IsEmpty", 1, _st_is_empty, deterministic=True)
            for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
                conn.create_function(name, 1, _envelope_getter(i), deterministic=True)
            conn.execute("PRAGMA foreign_keys=OFF")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(
                "%s is not a readable GeoPackage: %s" % (self.path, exc),
                hint="move it aside and run again, or pass --overwrite",
            ) from None
        missing = {"detections", "chips", "runs", "activity"} - tables
        if missing:
            raise OutputError(
                "%s exists but is not a Groundbreak output (no %s)" % (self.path, ", ".join(sorted(missing))),
                hint="choose another --out, or pass --overwrite to replace it",
            )
        return conn

    def _layer_srs(self, table: str) -> int:
        row = self._conn.execute(
            "SELECT srs_id FROM gpkg_geometry_columns WHERE table_name=?", (table,)
        ).fetchone()
        return int(row[0])

    # -- run ledger ----------------------------------------------------------------------------
    def fingerprints(self) -> List[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT fingerprint FROM runs")]

    def previous_scene_hashes(self, run_id: str) -> Dict[str, str]:
        """scene_id -> quick_hash recorded by the latest earlier attempt of ``run_id``."""
        row = self._conn.execute(
            "SELECT inputs FROM runs WHERE run_id=? ORDER BY attempt DESC LIMIT 1", (run_id,)
        ).fetchone()
        try:
            scenes = json.loads(row[0])["scenes"] if row and row[0] else []
            return {s["scene_id"]: s.get("quick_hash", "") for s in scenes}
        except (ValueError, KeyError, TypeError):
            return {}

    def latest_attempt(self) -> Dict[str, object]:
        """The JSON columns (params, inputs, stats) of the most recent attempt of any run, or {}."""
        row = self._conn.execute(
            "SELECT run_id, fingerprint, params, inputs, stats FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return {}
        out: Dict[str, object] = {"run_id": row[0], "fingerprint": row[1]}
        for key, text in zip(("params", "inputs", "stats"), row[2:]):
            try:
                out[key] = json.loads(text) if text else {}
            except ValueError:
                out[key] = {}
        return out

    def move_to(self, path: Path) -> None:
        """Close, rename the file to ``path`` (atomically replacing what is there) and reopen it."""
        self._conn.close()
        os.replace(self.path, path)
        self.path = Path(path)
        self._conn = self._connect()

    def finished_keys(self) -> Set[Tuple[str, str]]:
        """(scene_id, chip_id) of every chip already decided by an earlier attempt."""
        # Failed chips are not finished: a re-run retries them (their row is then replaced).
        return set(self._conn.execute("SELECT scene_id, chip_id FROM chips WHERE status != 'failed'"))

    def start_attempt(self, *, run_id: str, fingerprint: str, started: str, row: Dict[str, object]) -> int:
        attempt = self._conn.execute("SELECT COUNT(*) FROM runs WHERE run_id=?", (run_id,)).fetchone()[0] + 1
        cols = {
            "run_id": run_id,
            "attempt": attempt,
            "status": "running",
            "started": started,
            "fingerprint": fingerprint,
        }
        cols.update({k: _json_or_value(v) for k, v in row.items()})
        self._execute_in_transaction(
            "INSERT INTO runs (%s) VALUES (%s)" % (", ".join(cols), ", ".join("?" * len(cols))),
            tuple(cols.values()),
        )
        return attempt

    def finish_attempt(self, run_id: str, attempt: int, *, status: str, finished: str, row: Dict[str, object]) -> None:
        cols: Dict[str, object] = {"status": status, "finished": finished}
        cols.update({k: _json_or_value(v) for k, v in row.items()})
        self._execute_in_transaction(
            "UPDATE runs SET %s WHERE run_id=? AND attempt=?" % ", ".join("%s=?" % k for k in cols),
            tuple(cols.values()) + (run_id, attempt),
        )

    # -- results -------------------------------------------------------------------------------
    def commit(self, chips: Sequence[ChipRecord], detections: Sequence[DetectionRecord], *, run_id: str) -> None:
        """Write one batch atomically. The unique (scene_id, chip_id) index means a chip has one row:
        a retried chip (failed before) replaces its old row instead of duplicating it."""
        if not chips and not detections:
            return
        srs = self._srs_id
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR REPLACE INTO chips (geom, chip_id, aoi_id, scene_id, date, status, valid_fraction, "
                "screened_by, score, run_id, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        gpkg_blob(c.geometry_wkb, srs),
                        c.chip_id,
                        c.aoi_id,
                        c.scene_id,
                        c.date,
                        c.status,
                        round(float(c.valid_fraction), 6),
                        c.screened_by,
                        None if c.score is None else float(c.score),
                        run_id,
                        c.detail,
                    )
                    for c in chips
                ],
            )
            self._conn.executemany(
                "INSERT INTO detections (geom, chip_id, aoi_id, scene_id, date, score, label, model_id, "
                "run_id, review) VALUES (?,?,?,?,?,?,?,?,?,'')",
                [
                    (
                        gpkg_blob(d.geometry_wkb, srs),
                        d.chip_id,
                        d.aoi_id,
                        d.scene_id,
                        d.date,
                        float(d.score),
                        d.label,
                        d.model_id,
                        run_id,
                    )
                    for d in detections
                ],
            )
            self._conn.executemany(
                "INSERT INTO activity (geom, chip_id, aoi_id, scene_id, date, score, cells, area_m2, model_id, "
                "run_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        gpkg_blob(d.activity_wkb, srs),
                        d.chip_id,
                        d.aoi_id,
                        d.scene_id,
                        d.date,
                        float(d.score),
                        int(d.active_cells),
                        float(shapely.from_wkb(d.activity_wkb).area),
                        d.model_id,
                        run_id,
                    )
                    for d in detections
                    if d.activity_wkb is not None
                ],
            )
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutputError(
                "could not write results to %s: %s" % (self.path, exc),
                hint="check free disk space and that no other program holds the file open for writing; "
                "then re-run the same command to resume",
                retryable=True,
            ) from None
        except BaseException:
            # Encoding a row (or an interrupt) can fail after the chips went in: without this
            # rollback the half batch would stay pending and the next BEGIN would fail.
            self._rollback()
            raise

    def finalize(self) -> None:
        """Refresh layer extents (QGIS uses them to zoom) and feature counts."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for table in ("detections", "chips", "activity"):
                row = self._conn.execute(
                    "SELECT MIN(ST_MinX(geom)), MIN(ST_MinY(geom)), MAX(ST_MaxX(geom)), MAX(ST_MaxY(geom)), "
                    "COUNT(*) FROM \"%s\"" % table
                ).fetchone()
                self._conn.execute(
                    "UPDATE gpkg_contents SET min_x=?, min_y=?, max_x=?, max_y=?, "
                    "last_change=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE table_name=?",
                    row[:4] + (table,),
                )
                self._conn.execute(
                    "UPDATE gpkg_ogr_contents SET feature_count=? WHERE table_name=?", (row[4], table)
                )
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutputError("could not finalise %s: %s" % (self.path, exc), retryable=True) from None

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM chips GROUP BY status"):
            out[status] = n
        out["detections"] = self._conn.execute("SELECT COUNT(*) FROM detections").fetchone()[0]
        return out

    def failed_chips(self) -> List[Tuple[str, str, str]]:
        return list(self._conn.execute("SELECT scene_id, chip_id, detail FROM chips WHERE status='failed'"))

    def close(self) -> None:
        self._conn.close()

    def _execute_in_transaction(self, sql: str, params: tuple) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutputError("could not write to %s: %s" % (self.path, exc), retryable=True) from None

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def gpkg_blob(wkb: bytes, srs_id: int) -> bytes:
    """A GeoPackage geometry blob: 'GP' header with an XY envelope, then little-endian WKB."""
    geom = shapely.from_wkb(wkb)
    minx, miny, maxx, maxy = geom.bounds
    header = struct.pack("<2sBBi4d", b"GP", 0, 0b00000011, srs_id, minx, maxx, miny, maxy)
    return header + shapely.to_wkb(geom, byte_order=1)


def _st_is_empty(blob: Optional[bytes]) -> Optional[int]:
    if blob is None:
        return None
    return 1 if (blob[3] & 0b00010000) else 0


def geometry_from_blob(blob: bytes) -> BaseGeometry:
    """The shapely geometry of a GeoPackage blob (header, optional envelope, WKB)."""
    env_len = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(blob[3] >> 1) & 0b111]
    return shapely.from_wkb(blob[8 + env_len:])


def _envelope_getter(index: int):
    def _get(blob: Optional[bytes]) -> Optional[float]:
        if blob is None:
            return None
        if len(blob) >= 40 and (blob[3] >> 1) & 0b111:
            return struct.unpack_from("<4d", blob, 8)[index]
        # No envelope in the header: compute it from the WKB.
        minx, miny, maxx, maxy = geometry_from_blob(blob).bounds
        return (minx, maxx, miny, maxy)[index]

    return _get


def _json_or_value(value: object) -> object:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool):
        return int(value)
    return value


def read_layer_info(path: Path, layer: str) -> dict:
    """pyogrio's view of a layer (used by tests and the CLI summary)."""
    return pyogrio.read_info(str(path), layer=layer)
