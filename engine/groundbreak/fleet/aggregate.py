"""``fleet aggregate``: the run's parts merged into one output with the same layers as ``groundbreak run``.

A GeoPackage (``store.DetectionStore``: detections, activity, chips, runs — written the way ``run``
writes them, so QGIS, the plugin and the timeline stage read it as a run's output) or, for very large
outputs, a folder of GeoParquet files (one per layer, streamed row group by row group). Only parts
of units the ledger records as done are read — a stale part of a unit that was later split is
ignored — and failed units become ``failed`` chip records. A chip redone by ``fleet retry`` keeps its
newest record only. The output is written beside its final name and moved into place at the end, so
an interrupted aggregate leaves any earlier output as it was. When the timeline stage is installed
(``groundbreak.timeline.build_timeline``) it then runs once per AOI on the GeoPackage.
"""

from __future__ import annotations

import datetime as _dt
import enum
import importlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .. import __version__
from ..errors import DependencyError, OutputError, UsageError
from ..masks import Screening
from ..names import ChipStatus
from ..pipeline.options import RunStatus
from ..pipeline.provenance import versions
from ..pipeline.stages import chip_wkb
from ..reporter import Reporter
from ..store import ChipRecord, DetectionRecord, DetectionStore
from .costing import InstanceModel, cost_report
from .ledger import Ledger, UnitState
from .parts import PartStore

log = logging.getLogger(__name__)

#: Parts merged per GeoPackage transaction (small units are many; one commit each would be slow).
COMMIT_CHIPS = 20_000


class OutputFormat(str, enum.Enum):
    GPKG = "gpkg"
    PARQUET = "parquet"


@dataclass(frozen=True)
class AggregateResult:
    output: Path
    status: RunStatus
    units: int
    chips: int
    detections: int
    failed_chips: int
    seconds: float
    timelines: Optional[List[Dict[str, Any]]] = None  # None: the timeline stage is not installed
    cost: Dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


def aggregate(ledger_path: "str | os.PathLike[str]", out: "str | os.PathLike[str]", *,
              fmt: OutputFormat = OutputFormat.GPKG, allow_partial: bool = False, overwrite: bool = False,
              reporter: Optional[Reporter] = None, timeline: bool = True, timeline_params: Any = None,
              instance: Optional[InstanceModel] = None) -> AggregateResult:
    """Merge the run's parts into ``out`` (see the module docstring)."""
    t0 = time.perf_counter()
    reporter = reporter or Reporter()
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise UsageError("%s already exists" % out, hint="pass --overwrite to replace it, or choose another --out")
    with Ledger(ledger_path, readonly=True) as ledger:
        units = _units_to_merge(ledger, allow_partial)
        reporter.stage("aggregate", "merging %d unit(s) of run %s into %s" % (len(units), ledger.spec.run_id, out))
        records = _records(ledger, units, reporter)
        cost = cost_report(ledger, instance=instance).to_dict(per_aoi=False)
        if fmt is OutputFormat.GPKG:
            counts = _write_gpkg(ledger, out, records, cost)
        else:
            counts = _write_parquet(ledger, out, records, cost)
        aoi_ids = ledger.aoi_ids()
        dates = len({s.date for s in ledger.scenes()})
    failed = counts["failed"]
    status = RunStatus.PARTIAL if failed or len(units) < counts["expected_units"] else RunStatus.OK
    # As `run` does: sites with dates need more than one date.
    timelines = run_timelines(out, aoi_ids, timeline_params, reporter) \
        if fmt is OutputFormat.GPKG and timeline and dates > 1 else None
    return AggregateResult(output=out, status=status, units=len(units), chips=counts["chips"],
                           detections=counts["detections"], failed_chips=failed,
                           seconds=time.perf_counter() - t0, timelines=timelines, cost=cost)


def _units_to_merge(ledger: Ledger, allow_partial: bool):
    rows = ledger.rows()
    open_rows = [r for r in rows if r.state in (UnitState.PENDING, UnitState.RUNNING)]
    if open_rows and not allow_partial:
        raise UsageError(
            "%d of %d unit(s) of run %s are not finished (e.g. %s)" % (
                len(open_rows), len(rows), ledger.spec.run_id, open_rows[0].unit_id),
            hint="finish them with `groundbreak fleet run --ledger %s ...`, or pass --partial to merge what is "
                 "done" % ledger.path)
    # Newest generation first: a chip redone by `fleet retry` keeps its newest record only.
    return sorted((r for r in rows if r.state in (UnitState.DONE, UnitState.FAILED)),
                  key=lambda r: (-r.generation, r.scene_index, r.unit_id))


def _records(ledger: Ledger, units, reporter: Reporter) -> Iterator[Tuple[List[ChipRecord], List[DetectionRecord]]]:
    """Each unit's (chips, detections), newest generation first, without records superseded by a retry."""
    spec = ledger.spec
    parts = PartStore(spec.parts)
    scenes = ledger.scenes()
    seen: Set[Tuple[str, str]] = set()
    for i, row in enumerate(units):
        if row.state is UnitState.DONE:
            part = parts.read(row.part, run_id=spec.run_id, unit_id=row.unit_id)
            chips, detections = list(part.chips), list(part.detections)
        else:
            chips, detections = _failed_records(ledger, row.unit_id, row.error, scenes), []
        if seen:
            chips = [c for c in chips if (c.scene_id, c.chip_id) not in seen]
            detections = [d for d in detections if (d.scene_id, d.chip_id) not in seen]
        if row.generation > 0:
            seen.update((c.scene_id, c.chip_id) for c in chips)
        yield chips, detections
        if i % 50 == 0:
            reporter.progress("aggregate", i + 1, len(units), {"units": i + 1})


def _failed_records(ledger: Ledger, unit_id: str, error: str, scenes) -> List[ChipRecord]:
    unit = ledger.unit(unit_id)
    scene = scenes[unit.scene_index]
    grid = ledger.spec.grid
    detail = "unit %s failed on every attempt: %s" % (unit_id, error)
    return [ChipRecord(chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
                       status=ChipStatus.FAILED.value, valid_fraction=0.0, screened_by=Screening.EXACT.value,
                       geometry_wkb=chip_wkb(grid, ref), detail=detail) for _, ref in unit.refs()]


def _runs_row(ledger: Ledger) -> Dict[str, Any]:
    """The ``runs`` row's provenance, as ``run`` writes it (from the ledger: no model needed here)."""
    spec = ledger.spec
    plan = ledger.plan()
    info = ledger.info()
    return {
        "command": info.get("command", ""), "engine_version": __version__, "model_id": spec.model_id,
        "model_sha256": spec.model.sha256, "model_demo": spec.model_demo,
        "params": {
            "min_valid": spec.rule.min_valid, "drop_rule": spec.rule.fingerprint(), "batch_size": spec.batch_size,
            "threads": spec.threads, "readers": spec.readers, "price_per_hour": spec.price_per_hour,
            "requested_runtime": spec.runtime, "force_runtime": spec.force_runtime, "grid_epsg": spec.grid.epsg,
            "chip_px": spec.grid.chip_px, "gsd": spec.grid.gsd, "bands": [list(f.band_indexes) for f in plan.fits],
            "fleet": {"ledger": str(ledger.path), "parts": spec.parts, "unit_chips": spec.unit_chips},
        },
        "inputs": {
            "aois": [{"aoi_id": a.aoi_id, "source": a.source} for a in plan.aois],
            "scenes": [{"scene_id": s.scene_id, "path": s.path, "date": s.date.isoformat(),
                        "quick_hash": s.quick_hash} for s in plan.scenes],
            "model": {"model_id": spec.model_id, "sha256": spec.model.sha256, "digest": spec.model.digest},
        },
        "versions": versions(),
    }


def _write_gpkg(ledger: Ledger, out: Path, records, cost: Dict[str, Any]) -> Dict[str, int]:
    spec = ledger.spec
    tmp = out.with_name(".%s.new-%d.gpkg" % (out.stem, os.getpid()))
    tmp.unlink(missing_ok=True)
    store = DetectionStore(tmp, epsg=spec.grid.epsg)
    counts = {"chips": 0, "detections": 0, "failed": 0}
    try:
        started = _dt.datetime.now(_dt.timezone.utc).isoformat()
        attempt = store.start_attempt(run_id=spec.run_id, fingerprint=spec.fingerprint, started=started,
                                      row=_runs_row(ledger))
        chips: List[ChipRecord] = []
        detections: List[DetectionRecord] = []
        for c, d in records:
            chips.extend(c)
            detections.extend(d)
            if len(chips) >= COMMIT_CHIPS:
                _commit(store, chips, detections, spec.run_id, counts)
        _commit(store, chips, detections, spec.run_id, counts)
        store.finalize()
        totals = store.counts()
        status = RunStatus.PARTIAL if totals.get(ChipStatus.FAILED.value) else RunStatus.OK
        store.finish_attempt(spec.run_id, attempt, status=status.value,
                             finished=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                             row={"stats": _stats(ledger, totals), "cost": cost})
        store.close()
        os.replace(tmp, out)
    except BaseException:
        store.close()
        tmp.unlink(missing_ok=True)
        raise
    counts["expected_units"] = _expected_units(ledger)
    return counts


def _commit(store: DetectionStore, chips: List[ChipRecord], detections: List[DetectionRecord], run_id: str,
            counts: Dict[str, int]) -> None:
    store.commit(chips, detections, run_id=run_id)
    counts["chips"] += len(chips)
    counts["detections"] += len(detections)
    counts["failed"] += sum(c.status == ChipStatus.FAILED.value for c in chips)
    chips.clear()
    detections.clear()


def _expected_units(ledger: Ledger) -> int:
    states = ledger.state_counts()
    return sum(v["units"] for k, v in states.items() if k != UnitState.SPLIT.value)


def _stats(ledger: Ledger, totals: Dict[str, int]) -> Dict[str, Any]:
    info = ledger.info()
    t = ledger.totals()
    return {"run_id": ledger.spec.run_id, "aoi_km2": round(float(info["aoi_km2"]), 4),
            "scanned_km2": round(float(info["scanned_km2"]), 4), "scenes": len(ledger.scenes()),
            "ground_chips": int(info["ground_chips"]), "chips_planned": int(info["chips_planned"]),
            "chips_inferred": totals.get(ChipStatus.INFERRED.value, 0),
            "chips_failed": totals.get(ChipStatus.FAILED.value, 0), "detections": totals.get("detections", 0),
            "worker_seconds": round(float(t["seconds"]), 3), "cpu_seconds": round(float(t["cpu_seconds"]), 3),
            "model_id": ledger.spec.model_id, "model_demo": ledger.spec.model_demo, "fleet": True}


# -- GeoParquet -------------------------------------------------------------------------------------
_PARQUET_LAYERS = ("detections", "activity", "chips")


def _write_parquet(ledger: Ledger, out: Path, records, cost: Dict[str, Any]) -> Dict[str, int]:
    """One GeoParquet file per layer in the folder ``out`` (plus runs.json), streamed per unit."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError("GeoParquet output needs pyarrow",
                              hint="pip install 'groundbreak[fleet]' (or write a GeoPackage: --format gpkg)") from None
    import shapely

    spec = ledger.spec
    tmp = out.with_name(".%s.new-%d" % (out.name, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    crs = {"id": {"authority": "EPSG", "code": spec.grid.epsg}}
    schemas = {
        "detections": [("chip_id", pa.string()), ("aoi_id", pa.string()), ("scene_id", pa.string()),
                       ("date", pa.string()), ("score", pa.float64()), ("label", pa.string()),
                       ("model_id", pa.string()), ("run_id", pa.string()), ("geometry", pa.binary())],
        "activity": [("chip_id", pa.string()), ("aoi_id", pa.string()), ("scene_id", pa.string()),
                     ("date", pa.string()), ("score", pa.float64()), ("cells", pa.int32()),
                     ("area_m2", pa.float64()), ("model_id", pa.string()), ("run_id", pa.string()),
                     ("geometry", pa.binary())],
        "chips": [("chip_id", pa.string()), ("aoi_id", pa.string()), ("scene_id", pa.string()), ("date", pa.string()),
                  ("status", pa.string()), ("valid_fraction", pa.float64()), ("screened_by", pa.string()),
                  ("score", pa.float64()), ("run_id", pa.string()), ("detail", pa.string()),
                  ("geometry", pa.binary())],
    }
    writers = {}
    for layer, cols in schemas.items():
        geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": {
            "encoding": "WKB", "geometry_types": ["MultiPolygon"] if layer == "activity" else ["Polygon"],
            "crs": crs}}}
        schema = pa.schema([pa.field(n, t) for n, t in cols], metadata={b"geo": json.dumps(geo).encode()})
        writers[layer] = pq.ParquetWriter(str(tmp / ("%s.parquet" % layer)), schema, compression="zstd")
    counts = {"chips": 0, "detections": 0, "failed": 0}
    run_id = spec.run_id
    try:
        for chips, detections in records:
            rows: Dict[str, List[Sequence[Any]]] = {
                "chips": [(c.chip_id, c.aoi_id, c.scene_id, c.date, c.status, c.valid_fraction, c.screened_by,
                           c.score, run_id, c.detail, c.geometry_wkb) for c in chips],
                "detections": [(d.chip_id, d.aoi_id, d.scene_id, d.date, d.score, d.label, d.model_id, run_id,
                                d.geometry_wkb) for d in detections],
                "activity": [(d.chip_id, d.aoi_id, d.scene_id, d.date, d.score, d.active_cells,
                              float(shapely.from_wkb(d.activity_wkb).area), d.model_id, run_id, d.activity_wkb)
                             for d in detections if d.activity_wkb is not None],
            }
            for layer, table_rows in rows.items():
                if table_rows:
                    names = [n for n, _ in schemas[layer]]
                    cols = list(zip(*table_rows))
                    writers[layer].write_table(pa.table({n: list(v) for n, v in zip(names, cols)},
                                                        schema=writers[layer].schema))
            counts["chips"] += len(chips)
            counts["detections"] += len(detections)
            counts["failed"] += sum(c.status == ChipStatus.FAILED.value for c in chips)
        for w in writers.values():
            w.close()
        (tmp / "runs.json").write_text(json.dumps({"run_id": run_id, "fingerprint": spec.fingerprint,
                                                   **_runs_row(ledger), "cost": cost}, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        for w in writers.values():
            try:
                w.close()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts["expected_units"] = _expected_units(ledger)
    return counts


# -- the timeline stage -----------------------------------------------------------------------------
def run_timelines(gpkg: Path, aoi_ids: Sequence[str], params: Any = None,
                  reporter: Optional[Reporter] = None) -> Optional[List[Dict[str, Any]]]:
    """``groundbreak.timeline.build_timeline`` once per AOI, when that stage is installed; else None.

    The hook is resolved at call time so the fleet needs no change when the stage lands."""
    try:
        module = importlib.import_module("groundbreak.timeline")
    except ImportError:
        log.info("the timeline stage (groundbreak.timeline) is not installed: no sites built")
        return None
    build = getattr(module, "build_timeline", None)
    if build is None:
        return None
    if params is None and hasattr(module, "TimelineParams"):
        params = module.TimelineParams()
    if reporter is not None:
        reporter.stage("aggregate", "building timelines for %d AOI(s)" % len(aoi_ids))
    results = []
    for aoi_id in aoi_ids:
        try:
            result = build(gpkg, params, aoi_id=aoi_id)
        except Exception as exc:  # one AOI's timeline must not lose the merged output
            raise OutputError("the timeline stage failed for AOI %s: %s" % (aoi_id, exc),
                              hint="the merged detections in %s are complete; re-run `groundbreak timeline` on it"
                                   % gpkg) from None
        to_dict = getattr(result, "to_dict", None)
        results.append({"aoi_id": aoi_id, "result": to_dict() if callable(to_dict) else str(result)})
    return results
