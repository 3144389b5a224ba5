"""The fleet ledger: one SQLite file with the run's settings, its AOIs and scenes, and every unit's state.

Only the runner writes it (``fleet plan`` creates it; ``fleet run`` and ``fleet retry`` change it,
holding ``LEDGER.lock``); workers never touch it — SQLite is not safe with many writers on a shared
network disk. Every change is one transaction in a rollback journal with ``synchronous=FULL``, so a
runner killed at any instant leaves the ledger as of its last commit (a rollback journal, not WAL,
because WAL needs shared memory that network file systems do not offer). Readers (``fleet status``,
``fleet aggregate``) may open it at any time.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import shapely

from .. import __version__
from ..aoi import AOI
from ..errors import CorruptFileError, OutputError, UsageError
from ..grid import ChipGrid
from ..masks import DropRule, MaskSource
from ..pipeline.units import ModelRef
from ..plan import Plan
from ..scene import Scene
from ..suitability import SceneFit
from .work import FleetUnit, decode_blocks, encode_blocks

SCHEMA = 1


class UnitState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"  # submitted by a runner (a crashed runner's are pending again on restart)
    DONE = "done"  # its part is written and recorded
    FAILED = "failed"  # gave up: every attempt failed and it could not (or need not) be split further
    SPLIT = "split"  # replaced by its two halves


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What every unit of the run is processed with (fixed at plan time)."""

    run_id: str
    fingerprint: str
    model: ModelRef
    model_id: str
    model_demo: bool
    grid: ChipGrid
    rule: DropRule
    runtime: Optional[str]
    batch_size: int
    threads: int
    readers: int
    force_runtime: bool
    price_per_hour: float
    node_cores: int
    parts: str
    unit_chips: int

    def to_doc(self) -> Dict[str, Any]:
        doc = asdict(self)
        return doc

    @classmethod
    def from_doc(cls, doc: Dict[str, Any]) -> "RunSpec":
        values = dict(doc)
        values["model"] = ModelRef(**doc["model"])
        values["grid"] = ChipGrid(**doc["grid"])
        values["rule"] = DropRule(**doc["rule"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class UnitRow:
    unit_id: str
    scene_index: int
    parent: Optional[str]
    generation: int
    state: UnitState
    chips: int
    attempts: int
    next_try: float
    error: str
    seconds: float
    cpu_seconds: float
    inferred: int
    dropped: int
    failed: int
    detections: int
    part: str
    worker: str
    finished: float


_UNIT_COLUMNS = ("unit_id", "scene_index", "parent", "generation", "state", "chips", "attempts", "next_try", "error",
                 "seconds", "cpu_seconds", "inferred", "dropped", "failed", "detections", "part", "worker", "finished")

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE scenes (scene_index INTEGER PRIMARY KEY, scene_id TEXT NOT NULL, date TEXT NOT NULL,
                     path TEXT NOT NULL, doc TEXT NOT NULL, fit TEXT NOT NULL);
CREATE TABLE aois (aoi_index INTEGER PRIMARY KEY, aoi_id TEXT NOT NULL UNIQUE, source TEXT, source_crs TEXT,
                   km2 REAL NOT NULL, ground_chips INTEGER NOT NULL, chip_scenes INTEGER NOT NULL,
                   share REAL NOT NULL, geometry BLOB NOT NULL);
CREATE TABLE units (unit_id TEXT PRIMARY KEY, scene_index INTEGER NOT NULL, parent TEXT,
                    generation INTEGER NOT NULL, state TEXT NOT NULL, chips INTEGER NOT NULL, blocks BLOB NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_try REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', seconds REAL NOT NULL DEFAULT 0,
                    cpu_seconds REAL NOT NULL DEFAULT 0, inferred INTEGER NOT NULL DEFAULT 0,
                    dropped INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
                    detections INTEGER NOT NULL DEFAULT 0, part TEXT NOT NULL DEFAULT '',
                    worker TEXT NOT NULL DEFAULT '', finished REAL NOT NULL DEFAULT 0, summary TEXT);
CREATE INDEX units_state ON units (state);
CREATE TABLE unit_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, unit_id TEXT NOT NULL, attempt INTEGER NOT NULL,
                            runner_attempt INTEGER, outcome TEXT NOT NULL, kind TEXT NOT NULL DEFAULT '',
                            error TEXT NOT NULL DEFAULT '', worker TEXT NOT NULL DEFAULT '', submitted REAL,
                            finished REAL NOT NULL);
CREATE TABLE runner_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL,
                              status TEXT NOT NULL, executor TEXT NOT NULL, workers INTEGER NOT NULL,
                              cores_per_worker INTEGER NOT NULL, host TEXT, pid INTEGER,
                              chips INTEGER NOT NULL DEFAULT 0,
                              units INTEGER NOT NULL DEFAULT 0, busy_seconds REAL NOT NULL DEFAULT 0, detail TEXT);
"""


def _now() -> float:
    return time.time()


class Ledger:
    """An open ledger. ``Ledger.create`` makes one; ``Ledger(path)`` opens an existing one."""

    def __init__(self, path: "str | os.PathLike[str]", *, readonly: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UsageError("no fleet ledger at %s" % self.path,
                             hint="make one first: groundbreak fleet plan --aois AOIS --scenes ... --ledger %s"
                                  % self.path)
        self.readonly = readonly
        self._conn = _connect(self.path, readonly=readonly)
        try:
            schema = int(self.meta("schema"))
        except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
            raise CorruptFileError("%s is not a Groundbreak fleet ledger (%s)" % (self.path, exc),
                                   hint="pass the file `groundbreak fleet plan --ledger` made") from None
        if schema != SCHEMA:
            raise UsageError("ledger %s has schema %d; this engine reads schema %d" % (self.path, schema, SCHEMA),
                             hint="plan the run again with this engine version")
        self.spec = RunSpec.from_doc(json.loads(self.meta("spec")))
        self._aoi_ids: Optional[List[str]] = None

    # -- creation ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: "str | os.PathLike[str]", *, spec: RunSpec, plan: Plan, units: Sequence[FleetUnit],
               aoi_stats: Sequence[Dict[str, Any]], info: Dict[str, Any], overwrite: bool = False) -> "Ledger":
        """Write a new ledger atomically (a temporary file renamed into place)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise UsageError("%s already exists" % path,
                             hint="pass --overwrite to plan it again (its progress is lost), or use another --ledger")
        if not path.parent.exists():
            raise OutputError("folder %s does not exist" % path.parent, hint="create it first")
        tmp = path.with_name(".%s.creating-%d" % (path.name, os.getpid()))
        tmp.unlink(missing_ok=True)
        try:
            conn = _connect(tmp, readonly=False)
            try:
                conn.executescript(_DDL)
                _fill(conn, spec=spec, plan=plan, units=units, aoi_stats=aoi_stats, info=info)
            finally:
                conn.close()
            os.replace(tmp, path)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError("cannot write the ledger %s: %s" % (path, exc),
                              hint="choose a writable --ledger") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls(path)

    # -- reading -----------------------------------------------------------------------------------
    def meta(self, key: str) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return str(row[0])

    def info(self) -> Dict[str, Any]:
        return json.loads(self.meta("info"))

    def aoi_ids(self) -> List[str]:
        if self._aoi_ids is None:
            self._aoi_ids = [r[0] for r in self._conn.execute("SELECT aoi_id FROM aois ORDER BY aoi_index")]
        return self._aoi_ids

    def aoi_rows(self) -> List[Dict[str, Any]]:
        cur = self._conn.execute("SELECT aoi_id, source, km2, ground_chips, chip_scenes, share FROM aois "
                                 "ORDER BY aoi_index")
        return [dict(zip(("aoi_id", "source", "km2", "ground_chips", "chip_scenes", "share"), r)) for r in cur]

    def scenes(self) -> List[Scene]:
        return [_scene_from_doc(json.loads(r[0]))
                for r in self._conn.execute("SELECT doc FROM scenes ORDER BY scene_index")]

    def fits(self) -> List[SceneFit]:
        out = []
        for (text,) in self._conn.execute("SELECT fit FROM scenes ORDER BY scene_index"):
            doc = json.loads(text)
            out.append(SceneFit(band_indexes=tuple(doc["band_indexes"]), resolution_m=doc["resolution_m"],
                                model_gsd=doc["model_gsd"]))
        return out

    def plan(self) -> Plan:
        """The plan without its units (grid, AOIs, scenes, fits and areas): for provenance."""
        aois = tuple(AOI(aoi_id=r[0], geometry=shapely.from_wkb(r[3]), source=r[1] or "", source_crs=r[2] or "")
                     for r in self._conn.execute("SELECT aoi_id, source, source_crs, geometry FROM aois "
                                                 "ORDER BY aoi_index"))
        info = self.info()
        return Plan(grid=self.spec.grid, aois=aois, scenes=tuple(self.scenes()), units=(),
                    aoi_km2=float(info["aoi_km2"]), scanned_km2=float(info["scanned_km2"]),
                    ground_chips=int(info["ground_chips"]), fits=tuple(self.fits()))

    def rows(self, states: Optional[Iterable[UnitState]] = None) -> List[UnitRow]:
        sql = "SELECT %s FROM units" % ", ".join(_UNIT_COLUMNS)
        params: Tuple[Any, ...] = ()
        if states is not None:
            wanted = [s.value for s in states]
            sql += " WHERE state IN (%s)" % ",".join("?" * len(wanted))
            params = tuple(wanted)
        sql += " ORDER BY generation, scene_index, unit_id"
        return [_unit_row(r) for r in self._conn.execute(sql, params)]

    def row(self, unit_id: str) -> UnitRow:
        r = self._conn.execute("SELECT %s FROM units WHERE unit_id=?" % ", ".join(_UNIT_COLUMNS), (unit_id,)).fetchone()
        if r is None:
            raise KeyError(unit_id)
        return _unit_row(r)

    def unit(self, unit_id: str) -> FleetUnit:
        r = self._conn.execute("SELECT unit_id, scene_index, blocks, parent, generation FROM units WHERE unit_id=?",
                               (unit_id,)).fetchone()
        if r is None:
            raise KeyError(unit_id)
        return FleetUnit(r[0], int(r[1]), decode_blocks(r[2], self.spec.grid, self.aoi_ids()), parent=r[3],
                         generation=int(r[4]))

    def summary_of(self, unit_id: str) -> Dict[str, Any]:
        r = self._conn.execute("SELECT summary FROM units WHERE unit_id=?", (unit_id,)).fetchone()
        return json.loads(r[0]) if r and r[0] else {}

    def children(self, unit_id: str) -> List[UnitRow]:
        cur = self._conn.execute("SELECT %s FROM units WHERE parent=? ORDER BY unit_id" % ", ".join(_UNIT_COLUMNS),
                                 (unit_id,))
        return [_unit_row(r) for r in cur]

    def state_counts(self) -> Dict[str, Dict[str, int]]:
        """Per state: units and chips."""
        out = {s.value: {"units": 0, "chips": 0} for s in UnitState}
        for state, n, chips in self._conn.execute("SELECT state, COUNT(*), SUM(chips) FROM units GROUP BY state"):
            out[state] = {"units": int(n), "chips": int(chips or 0)}
        return out

    def totals(self) -> Dict[str, float]:
        """Sums over done units: chips by outcome, detections, worker seconds."""
        r = self._conn.execute(
            "SELECT COALESCE(SUM(chips),0), COALESCE(SUM(inferred),0), COALESCE(SUM(dropped),0), "
            "COALESCE(SUM(failed),0), COALESCE(SUM(detections),0), COALESCE(SUM(seconds),0), "
            "COALESCE(SUM(cpu_seconds),0) FROM units WHERE state='done'").fetchone()
        keys = ("chips", "inferred", "dropped", "failed", "detections", "seconds", "cpu_seconds")
        return dict(zip(keys, r))

    def failed_chips(self) -> int:
        """Chips recorded as failed and not redone since: in failed units, and in done units whose
        failed chips no finished retry unit (``fleet retry``) has redone."""
        in_failed = self._conn.execute("SELECT COALESCE(SUM(chips), 0) FROM units WHERE state='failed'").fetchone()[0]
        in_done = self._conn.execute(
            "SELECT COALESCE(SUM(u.failed), 0) FROM units u WHERE u.state='done' AND u.failed > 0 AND NOT EXISTS "
            "(SELECT 1 FROM units c WHERE c.parent = u.unit_id AND c.generation > u.generation AND c.state='done')"
        ).fetchone()[0]
        return int(in_failed) + int(in_done)

    def runner_attempts(self) -> List[Dict[str, Any]]:
        cols = ("id", "started", "finished", "status", "executor", "workers", "cores_per_worker", "host", "pid",
                "chips", "units", "busy_seconds", "detail")
        return [dict(zip(cols, r)) for r in self._conn.execute(
            "SELECT %s FROM runner_attempts ORDER BY id" % ", ".join(cols))]

    def unit_attempts(self, unit_id: Optional[str] = None) -> List[Dict[str, Any]]:
        cols = ("unit_id", "attempt", "runner_attempt", "outcome", "kind", "error", "worker", "submitted", "finished")
        sql = "SELECT %s FROM unit_attempts" % ", ".join(cols)
        params: Tuple[Any, ...] = ()
        if unit_id is not None:
            sql += " WHERE unit_id=?"
            params = (unit_id,)
        return [dict(zip(cols, r)) for r in self._conn.execute(sql + " ORDER BY id", params)]

    def done_by_runner(self, runner_attempt: int) -> Tuple[int, Optional[float]]:
        """Chips of the units one runner attempt finished, and when it finished the last one."""
        chips, last = self._conn.execute(
            "SELECT COALESCE(SUM(u.chips), 0), MAX(a.finished) FROM unit_attempts a JOIN units u ON u.unit_id = "
            "a.unit_id WHERE a.runner_attempt=? AND a.outcome='done'", (runner_attempt,)).fetchone()
        return int(chips), last

    # -- writing (the runner only) -----------------------------------------------------------------
    def _write(self, statements: Sequence[Tuple[str, Tuple[Any, ...]]]) -> None:
        if self.readonly:
            raise RuntimeError("ledger opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise OutputError("cannot update the ledger %s: %s" % (self.path, exc), retryable=True,
                              hint="check free disk space; the ledger keeps its last committed state") from None

    def mark_running(self, unit_id: str) -> None:
        self._write([("UPDATE units SET state='running' WHERE unit_id=?", (unit_id,))])

    def record_done(self, unit_id: str, summary: Dict[str, Any], *, runner_attempt: Optional[int],
                    submitted: Optional[float]) -> None:
        counts = summary.get("counts", {})
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped-"))
        row = self.row(unit_id)
        self._write([
            ("UPDATE units SET state='done', attempts=?, seconds=?, cpu_seconds=?, inferred=?, dropped=?, failed=?, "
             "detections=?, part=?, worker=?, finished=?, error='', summary=? WHERE unit_id=?",
             (row.attempts + 1, float(summary.get("seconds", 0.0)), float(summary.get("cpu_seconds", 0.0)),
              int(counts.get("inferred", 0)), dropped, int(counts.get("failed", 0)), int(summary.get("detections", 0)),
              str(summary.get("part", "")), str(summary.get("worker", "")), _now(), json.dumps(summary), unit_id)),
            ("INSERT INTO unit_attempts (unit_id, attempt, runner_attempt, outcome, worker, submitted, finished) "
             "VALUES (?,?,?,?,?,?,?)", (unit_id, row.attempts + 1, runner_attempt, "done",
                                        str(summary.get("worker", "")), submitted, _now())),
        ])

    def record_failure(self, unit_id: str, *, kind: str, error: str, next_try: float, runner_attempt: Optional[int],
                       submitted: Optional[float], state: UnitState = UnitState.PENDING) -> int:
        """One failed attempt; the unit goes back to ``state`` (pending, or failed when giving up)."""
        row = self.row(unit_id)
        attempts = row.attempts + 1
        self._write([
            ("UPDATE units SET state=?, attempts=?, next_try=?, error=?, finished=? WHERE unit_id=?",
             (state.value, attempts, next_try, error, _now(), unit_id)),
            ("INSERT INTO unit_attempts (unit_id, attempt, runner_attempt, outcome, kind, error, submitted, finished) "
             "VALUES (?,?,?,?,?,?,?,?)", (unit_id, attempts, runner_attempt, "failed", kind, error, submitted, _now())),
        ])
        return attempts

    def give_up(self, unit_ids: Sequence[str]) -> None:
        self._write([("UPDATE units SET state='failed' WHERE unit_id=?", (u,)) for u in unit_ids])

    def split(self, unit_id: str, halves: Sequence[FleetUnit]) -> None:
        """Replace a failing unit by its halves (one transaction: never both or neither)."""
        index = {a: i for i, a in enumerate(self.aoi_ids())}
        self._write([("UPDATE units SET state='split' WHERE unit_id=?", (unit_id,))] + [
            ("INSERT INTO units (unit_id, scene_index, parent, generation, state, chips, blocks) "
             "VALUES (?,?,?,?,?,?,?)", (h.unit_id, h.scene_index, h.parent, h.generation, "pending", h.chips,
                                       encode_blocks(h, index))) for h in halves])

    def add_units(self, units: Sequence[FleetUnit]) -> None:
        index = {a: i for i, a in enumerate(self.aoi_ids())}
        self._write([("INSERT INTO units (unit_id, scene_index, parent, generation, state, chips, blocks) "
                      "VALUES (?,?,?,?,?,?,?)", (u.unit_id, u.scene_index, u.parent, u.generation, "pending",
                                                 u.chips, encode_blocks(u, index))) for u in units])

    def reset(self, unit_ids: Sequence[str]) -> None:
        """Back to pending with a fresh budget of attempts (``fleet retry``, or a crashed runner's units)."""
        self._write([("UPDATE units SET state='pending', attempts=0, next_try=0 WHERE unit_id=?", (u,))
                     for u in unit_ids])

    def requeue(self, unit_ids: Sequence[str]) -> None:
        """Back to pending keeping the attempts (units a stopped runner had submitted)."""
        self._write([("UPDATE units SET state='pending' WHERE unit_id=? AND state='running'", (u,))
                     for u in unit_ids])

    def start_runner(self, *, executor: str, workers: int, cores_per_worker: int) -> int:
        import socket

        self._write([("INSERT INTO runner_attempts (started, status, executor, workers, cores_per_worker, host, pid) "
                      "VALUES (?,?,?,?,?,?,?)", (_now(), "running", executor, workers, cores_per_worker,
                                                 socket.gethostname(), os.getpid()))])
        return int(self._conn.execute("SELECT MAX(id) FROM runner_attempts").fetchone()[0])

    def update_runner(self, attempt: int, *, status: str, chips: int, units: int, busy_seconds: float,
                      workers: int, finished: bool = False, detail: str = "") -> None:
        self._write([("UPDATE runner_attempts SET status=?, chips=?, units=?, busy_seconds=?, workers=?, "
                      "finished=?, detail=? WHERE id=?",
                      (status, chips, units, busy_seconds, workers, _now() if finished else None, detail, attempt))])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunnerLock:
    """The one-writer guarantee: an exclusive lock on ``LEDGER.lock``, released however the holder ends."""

    def __init__(self, ledger_path: "str | os.PathLike[str]") -> None:
        self.path = Path(str(ledger_path) + ".lock")
        self._fh: Optional[IO[str]] = None

    def acquire(self) -> "RunnerLock":
        import fcntl

        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UsageError("ledger %s is in use by %s" % (str(self.path)[:-5], holder),
                             hint="wait for that fleet run to end (or stop it) before running or retrying") from None
        fh.seek(0)
        fh.truncate()
        import socket

        fh.write("fleet runner pid %d on %s" % (os.getpid(), socket.gethostname()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunnerLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- helpers ----------------------------------------------------------------------------------------
def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            # Not mode=ro: a reader must be able to roll back the hot journal a killed runner left
            # (SQLite does that on open); query_only keeps this connection from writing anything else.
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
        else:
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn
    except sqlite3.DatabaseError as exc:
        raise CorruptFileError("cannot open the ledger %s: %s" % (path, exc),
                               hint="check the path; make a ledger with groundbreak fleet plan") from None


def _fill(conn: sqlite3.Connection, *, spec: RunSpec, plan: Plan, units: Sequence[FleetUnit],
          aoi_stats: Sequence[Dict[str, Any]], info: Dict[str, Any]) -> None:
    conn.execute("BEGIN")
    meta = {"schema": str(SCHEMA), "spec": json.dumps(spec.to_doc(), sort_keys=True),
            "info": json.dumps(dict(info, engine_version=__version__, created=_dt.datetime.now(
                _dt.timezone.utc).isoformat()), sort_keys=True, default=str)}
    conn.executemany("INSERT INTO meta VALUES (?,?)", list(meta.items()))
    conn.executemany("INSERT INTO scenes VALUES (?,?,?,?,?,?)", [
        (i, s.scene_id, s.date.isoformat(), s.path, json.dumps(_scene_to_doc(s)),
         json.dumps({"band_indexes": list(f.band_indexes), "resolution_m": f.resolution_m, "model_gsd": f.model_gsd}))
        for i, (s, f) in enumerate(zip(plan.scenes, plan.fits))])
    stats = {s["aoi_id"]: s for s in aoi_stats}
    conn.executemany("INSERT INTO aois VALUES (?,?,?,?,?,?,?,?,?)", [
        (i, a.aoi_id, a.source, a.source_crs, stats[a.aoi_id]["km2"], stats[a.aoi_id]["ground_chips"],
         stats[a.aoi_id]["chip_scenes"], stats[a.aoi_id]["share"], shapely.to_wkb(a.geometry))
        for i, a in enumerate(plan.aois)])
    index = {a.aoi_id: i for i, a in enumerate(plan.aois)}
    conn.executemany("INSERT INTO units (unit_id, scene_index, parent, generation, state, chips, blocks) "
                     "VALUES (?,?,?,?,?,?,?)",
                     ((u.unit_id, u.scene_index, u.parent, u.generation, "pending", u.chips, encode_blocks(u, index))
                      for u in units))
    conn.execute("COMMIT")


def _unit_row(r: Sequence[Any]) -> UnitRow:
    values = dict(zip(_UNIT_COLUMNS, r))
    values["state"] = UnitState(values["state"])
    return UnitRow(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, MaskSource):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(MaskSource)}
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _scene_to_doc(scene: Scene) -> Dict[str, Any]:
    return {f.name: _plain(getattr(scene, f.name)) for f in fields(Scene)}


def _scene_from_doc(doc: Dict[str, Any]) -> Scene:
    values = {k: _tuples(v) for k, v in doc.items() if k != "mask_sources"}
    values["date"] = _dt.date.fromisoformat(doc["date"])
    values["mask_sources"] = tuple(MaskSource(**{k: _tuples(v) for k, v in m.items()}) for m in doc["mask_sources"])
    return Scene(**values)


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
