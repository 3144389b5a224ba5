"""The run: screen → extract → infer → write, over the plan's one shared queue.

Stage functions (``screen_unit``, ``extract_chip``, ``infer_batch``) are plain functions of values,
so any executor can run them: this module's in-process runner (used by the CLI and the plugin)
overlaps I/O and compute with one reader thread feeding a bounded queue; a fleet executor runs the
same functions per work unit on other machines.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import psutil
import shapely
from shapely.geometry import mapping

from . import __version__
from .cost import DEFAULT_PRICE_PER_HOUR, Cost, cost_of, remember_throughput
from .errors import DependencyError, OutputError, ReadError, UsageError
from .grid import ChipGrid
from .model import ModelPackage
from .plan import ChipRef, Plan, WorkUnit
from .reporter import CancelToken, Reporter
from .masks import DropRule, Screening, class_fractions, describe_fractions
from .names import ChipStatus
from .scene import Scene, select_bands
from .store import ChipRecord, DetectionRecord, DetectionStore
from .view import SceneView

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class RunOptions:
    min_valid: float = 0.5
    batch_size: int = 32
    threads: int = 2
    price_per_hour: float = DEFAULT_PRICE_PER_HOUR
    runtime: Optional[str] = None  # None: the model package's choice (groundbreak:runtime)
    readers: int = 2  # reader threads (I/O stage)
    overwrite: bool = False
    #: Chips whose decimated-mask estimate is this far below --min-valid are dropped without
    #: reading their pixels; everything closer is decided on the full-resolution mask.
    prefilter_margin: float = 0.15

    def validate(self) -> None:
        if not 0.0 <= self.min_valid <= 1.0:
            raise UsageError("--min-valid must be between 0 and 1 (got %s)" % self.min_valid)
        if not 1 <= self.batch_size <= 1024:
            raise UsageError("--batch-size must be between 1 and 1024 (got %s)" % self.batch_size)
        if self.threads < 1:
            raise UsageError("--threads must be at least 1 (got %s)" % self.threads)
        if not 1 <= self.readers <= 64:
            raise UsageError("--readers must be between 1 and 64 (got %s)" % self.readers)
        if self.price_per_hour < 0:
            raise UsageError("--price-per-hour cannot be negative")

    def fingerprint_fields(self) -> Dict[str, object]:
        # Only what changes results: batch size, threads and price do not.
        return {"min_valid": self.min_valid, "prefilter_margin": self.prefilter_margin}


@dataclass(frozen=True, slots=True)
class ReadyChip:
    unit_id: str
    scene_index: int
    ref: ChipRef
    data: np.ndarray
    valid_fraction: float


@dataclass(frozen=True)
class RunResult:
    output: Path
    status: str  # ok | cancelled | partial
    exit_code: int
    stats: Dict[str, object]
    cost: Cost
    failed: Tuple[Tuple[str, str, str], ...] = field(default=())


# -- stage functions ------------------------------------------------------------------------------
def screen_unit(
    view: SceneView, unit: WorkUnit, chips: Sequence[ChipRef], *, scene: Scene, grid: ChipGrid,
    min_valid: float, margin: float,
) -> Tuple[List[ChipRecord], List[ChipRef]]:
    """Cheap screening from decimated masks: (dropped records, candidates to read)."""
    if not chips:
        return [], []
    try:
        fractions = view.prefilter([(c.col, c.row) for c in chips])
    except ReadError as exc:
        # One damaged mask tile must not fail the whole run: decide each chip on its own full
        # read, which records the chips that really cannot be read as failed.
        log.warning("%s: screening without the decimated masks (%s)", unit.unit_id, exc.message)
        return [], list(chips)
    rule = DropRule(min_valid, margin)
    dropped: List[ChipRecord] = []
    keep: List[ChipRef] = []
    for ref, frac in zip(chips, fractions):
        status = rule.decide(frac, Screening.PREFILTER)
        if status is not None:
            dropped.append(_drop_record(ref, scene, grid, frac, status, Screening.PREFILTER))
        else:
            keep.append(ref)
    return dropped, keep


def extract_chip(
    view: SceneView, ref: ChipRef, *, unit: WorkUnit, scene: Scene, grid: ChipGrid, min_valid: float
) -> "ChipRecord | ReadyChip":
    """Read one chip at full resolution and decide it exactly: a drop/failure record or a ready chip."""
    try:
        pixels = view.read_chip(ref.col, ref.row)
    except ReadError as exc:
        return ChipRecord(
            chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
            status="failed", valid_fraction=0.0, screened_by="exact",
            geometry_wkb=shapely.to_wkb(grid.polygon(ref.col, ref.row)), detail=str(exc),
        )
    frac = class_fractions(pixels.classes)
    status = DropRule(min_valid).decide(frac, Screening.EXACT)
    if status is not None:
        return _drop_record(ref, scene, grid, frac, status, Screening.EXACT)
    return ReadyChip(unit.unit_id, unit.scene_index, ref, pixels.data, float(frac[0]))


def infer_batch(
    predictor, model: ModelPackage, batch: Sequence[ReadyChip], scenes: Sequence[Scene], grid: ChipGrid
) -> Tuple[List[ChipRecord], List[DetectionRecord], np.ndarray]:
    """Run the model once on a batch; returns chip records, detections and the cell maps."""
    dtype = scenes[batch[0].scene_index].dtype
    stacked = np.stack([c.data for c in batch])
    prediction = predictor.predict(stacked, dtype)
    chips: List[ChipRecord] = []
    detections: List[DetectionRecord] = []
    cell_maps = getattr(prediction, "cells", None)
    for i, (ready, score) in enumerate(zip(batch, prediction.scores)):
        scene = scenes[ready.scene_index]
        wkb = shapely.to_wkb(grid.polygon(ready.ref.col, ready.ref.row))
        chips.append(ChipRecord(
            chip_id=ready.ref.chip_id, aoi_id=ready.ref.aoi_label, scene_id=scene.scene_id,
            date=scene.date.isoformat(), status="inferred", valid_fraction=ready.valid_fraction,
            screened_by="exact", geometry_wkb=wkb, score=float(score),
        ))
        if float(score) >= model.threshold:
            activity, n_cells = activity_footprint(grid, ready.ref.col, ready.ref.row,
                                                 None if cell_maps is None else cell_maps[i])
            detections.append(DetectionRecord(
                chip_id=ready.ref.chip_id, aoi_id=ready.ref.aoi_label, scene_id=scene.scene_id,
                date=scene.date.isoformat(), score=float(score), label=model.positive_class,
                model_id=model.model_id, geometry_wkb=wkb,
                activity_wkb=None if activity is None else shapely.to_wkb(activity), active_cells=n_cells,
            ))
    return chips, detections, prediction.cells


#: A cell of the coarse activity map counts as active at this probability.
CELL_THRESHOLD = 0.5


def activity_footprint(grid: ChipGrid, col: int, row: int, cells: Optional[np.ndarray]):
    """The chip's active cells as one MultiPolygon in the grid CRS, and how many there are.

    When no cell reaches CELL_THRESHOLD (the chip score and the map disagree), the single most
    active cell stands for the detection, so every detection has a footprint."""
    if cells is None or np.ndim(cells) != 2 or cells.size == 0:
        return None, 0
    g_rows, g_cols = cells.shape
    cs_x = grid.size_m / g_cols
    cs_y = grid.size_m / g_rows
    active = np.argwhere(cells >= CELL_THRESHOLD)
    if len(active) == 0:
        active = np.array([np.unravel_index(int(np.argmax(cells)), cells.shape)])
    left = col * grid.size_m
    top = (row + 1) * grid.size_m
    boxes = shapely.box(left + active[:, 1] * cs_x, top - (active[:, 0] + 1) * cs_y,
                        left + (active[:, 1] + 1) * cs_x, top - active[:, 0] * cs_y)
    union = shapely.union_all(boxes)
    if union.geom_type == "Polygon":
        union = shapely.MultiPolygon([union])
    return union, int(len(active))


def _drop_record(ref: ChipRef, scene: Scene, grid: ChipGrid, frac: np.ndarray, status: ChipStatus,
                 by: Screening) -> ChipRecord:
    return ChipRecord(
        chip_id=ref.chip_id, aoi_id=ref.aoi_label, scene_id=scene.scene_id, date=scene.date.isoformat(),
        status=status.value, valid_fraction=float(frac[0]), screened_by=by.value,
        geometry_wkb=shapely.to_wkb(grid.polygon(ref.col, ref.row)), detail=describe_fractions(frac),
    )


# -- the in-process runner ------------------------------------------------------------------------
def band_indexes_for(plan: Plan, model: ModelPackage) -> List[Tuple[int, ...]]:
    """Each scene's band indexes for the model, from the plan's fits (or matched now for a plan made
    without a model)."""
    if plan.fits:
        return [fit.band_indexes for fit in plan.fits]
    return [select_bands(scene, model.bands) for scene in plan.scenes]


def run_detection(
    plan: Plan,
    model: ModelPackage,
    out: Path,
    *,
    options: RunOptions = RunOptions(),
    reporter: Optional[Reporter] = None,
    cancel: Optional[CancelToken] = None,
    command: str = "",
) -> RunResult:
    """Run the plan and write ``out``. Re-running the same inputs into the same ``out`` resumes."""
    options.validate()
    reporter = reporter or Reporter()
    cancel = cancel or CancelToken()
    out = Path(out)
    grid = plan.grid
    band_indexes = band_indexes_for(plan, model)

    _predictor_class()  # a missing torch fails here, before --overwrite removes anything
    if options.overwrite and out.exists():
        out.unlink()
    store = DetectionStore(out, epsg=grid.epsg)
    try:
        return _run(plan, model, out, store, band_indexes, options, reporter, cancel, command)
    finally:
        store.close()


def _run(plan, model, out, store, band_indexes, options, reporter, cancel, command) -> RunResult:
    grid = plan.grid
    fingerprint = plan.fingerprint({"model": model.sha256, **options.fingerprint_fields()})
    run_id = fingerprint[:12]
    previous = store.fingerprints()
    if previous and fingerprint not in previous:
        raise OutputError(
            "%s already holds results of a different run (other inputs, model or --min-valid)" % out,
            hint="write to another --out, or pass --overwrite to replace it",
        )
    finished = store.finished_keys()
    resumed = len(finished)
    if previous:
        before = store.previous_scene_hashes(run_id)
        for scene in plan.scenes:
            old = before.get(scene.scene_id)
            if old and scene.quick_hash and old != scene.quick_hash:
                reporter.warning(
                    "scene_changed",
                    "%s changed since the earlier attempt of this run: chips already done keep their "
                    "results, the rest (and failed chips) are read from the new file" % scene.scene_id,
                    "pass --overwrite to redo every chip from the current files",
                )
    todo_units: List[Tuple[WorkUnit, List[ChipRef]]] = []
    for unit in plan.units:
        scene_id = plan.scenes[unit.scene_index].scene_id
        pending = [c for c in unit.chips if (scene_id, c.chip_id) not in finished]
        if pending:
            todo_units.append((unit, pending))
    total = sum(len(p) for _, p in todo_units)
    if resumed:
        reporter.stage("plan", "resuming: %d chip(s) already done, %d to go" % (resumed, total))

    Predictor = _predictor_class()

    # The run's clock (and so its cost) includes loading the model: a node pays for that too.
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()

    reporter.stage("infer", "loading model %s (%s)" % (model.model_id, "DEMO weights" if model.demo else model.version))
    predictor = Predictor(model, threads=options.threads, runtime=options.runtime)
    if model.demo:
        reporter.warning(
            "demo_model",
            "model %s has DEMO weights: trained on synthetic scenes, not validated on real construction imagery"
            % model.model_id,
            "treat detections as a demonstration; train on your own labels for real use",
        )
    started = _dt.datetime.now(_dt.timezone.utc)
    attempt = store.start_attempt(
        run_id=run_id, fingerprint=fingerprint, started=started.isoformat(),
        row={
            "command": command, "engine_version": __version__, "model_id": model.model_id,
            "model_sha256": model.sha256, "model_demo": model.demo,
            "params": {
                "min_valid": options.min_valid, "batch_size": options.batch_size, "threads": options.threads,
                "readers": options.readers,
                "price_per_hour": options.price_per_hour, "runtime": getattr(predictor, "runtime", options.runtime),
                "grid_epsg": grid.epsg, "chip_px": grid.chip_px, "gsd": grid.gsd,
            },
            "inputs": {
                "aois": [{"aoi_id": a.aoi_id, "source": a.source} for a in plan.aois],
                "scenes": [{"scene_id": s.scene_id, "path": s.path, "date": s.date.isoformat(),
                            "quick_hash": s.quick_hash} for s in plan.scenes],
                "model": model.provenance(),
            },
            "versions": _versions(),
        },
    )

    counts = {"planned": plan.chips_planned, "resumed": resumed, "dropped_nodata": 0, "dropped_cloud": 0,
              "dropped_shadow": 0, "inferred": 0, "failed": 0, "detections": 0}
    timings = {"screen_s": 0.0, "read_s": 0.0, "infer_s": 0.0, "write_s": 0.0, "wait_s": 0.0, "model_load_s": 0.0}
    timings["model_load_s"] = time.perf_counter() - t0
    reporter.stage("infer", "model ready on runtime %s (%.1f s to load)" % (
        getattr(predictor, "runtime", options.runtime), timings["model_load_s"]))
    reporter.stage("screen", "%d chip(s) in %d work unit(s) over %d scene(s)" % (total, len(todo_units), len(plan.scenes)))
    reporter.progress("infer", 0, total, counts)

    items: "queue.Queue" = queue.Queue(maxsize=max(4, options.batch_size * 3))
    stop = threading.Event()
    reader_error: List[BaseException] = []
    thread = threading.Thread(
        target=_reader, name="groundbreak-reader",
        args=(plan, band_indexes, todo_units, options, items, stop, timings, reader_error), daemon=True,
    )
    thread.start()

    pending_records: List[ChipRecord] = []
    batch: List[ReadyChip] = []
    done = 0
    status = "ok"
    last_progress = 0.0

    def flush(final: bool = False) -> None:
        nonlocal done, batch, pending_records, last_progress
        chips = list(pending_records)
        detections: List[DetectionRecord] = []
        if batch:
            t = time.perf_counter()
            inferred, detections, _cells = infer_batch(predictor, model, batch, plan.scenes, grid)
            timings["infer_s"] += time.perf_counter() - t
            chips.extend(inferred)
        if not chips:
            return
        t = time.perf_counter()
        store.commit(chips, detections, run_id=run_id)
        timings["write_s"] += time.perf_counter() - t
        for rec in chips:
            key = {"inferred": "inferred", "failed": "failed"}.get(rec.status, rec.status.replace("-", "_"))
            counts[key] += 1
        counts["detections"] += len(detections)
        done += len(chips)
        if detections:
            reporter.features(grid.crs_string, [_feature(d, run_id) for d in detections])
        now = time.perf_counter()
        if final or batch or now - last_progress > 0.5:
            reporter.progress("infer", done, total, counts)
            last_progress = now
        batch = []
        pending_records = []

    try:
        while True:
            if cancel.cancelled:
                status = "cancelled"
                break
            t = time.perf_counter()
            item = items.get()
            timings["wait_s"] += time.perf_counter() - t
            if item is None:
                break
            if isinstance(item, ReadyChip):
                batch.append(item)
                if len(batch) >= options.batch_size:
                    flush()
            else:
                pending_records.append(item)
                if len(pending_records) >= 4 * options.batch_size and not batch:
                    flush()
        if reader_error:
            raise reader_error[0]
        if status == "cancelled":
            # Decisions already made (drops) are kept; chips read but not inferred are redone on resume.
            batch = []
        flush(final=True)
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
        predictor_seconds = getattr(predictor, "seconds", None)

    reporter.stage("write", "finalising %s" % out)
    store.finalize()
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    totals = store.counts()
    failed = tuple(store.failed_chips())
    if status == "ok" and failed:
        status = "partial"
    processed = done
    scanned_km2 = plan.scanned_km2 * (processed / plan.chips_planned) if plan.chips_planned else 0.0
    cost = cost_of(wall, price_per_hour=options.price_per_hour, km2=scanned_km2, chips=processed)
    stats: Dict[str, object] = {
        "run_id": run_id,
        "attempt": attempt,
        "aoi_km2": round(plan.aoi_km2, 4),
        "scanned_km2": round(plan.scanned_km2, 4),
        "scenes": len(plan.scenes),
        "ground_chips": plan.ground_chips,
        "chips_planned": plan.chips_planned,
        "chips_resumed": resumed,
        "chips_processed": processed,
        "chips_dropped": {k: totals["dropped-" + k] for k in ("nodata", "cloud", "shadow")},
        "chips_inferred": totals["inferred"],
        "chips_failed": totals["failed"],
        "detections": totals["detections"],
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "chips_per_s": round(processed / wall, 2) if wall > 0 else None,
        "inferred_per_s": round(counts["inferred"] / wall, 2) if wall > 0 else None,
        "km2_per_h": round(scanned_km2 / (wall / 3600.0), 2) if wall > 0 and scanned_km2 else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "runtime": getattr(predictor, "runtime", options.runtime),
        "batch_size": options.batch_size,
        "threads": options.threads,
        "readers": options.readers,
        "model_id": model.model_id,
        "model_demo": model.demo,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "status": status,
    }
    if predictor_seconds:
        stats["timings"]["model_s"] = round(float(predictor_seconds), 3)  # type: ignore[index]
    steady = wall - timings["model_load_s"]
    if counts["inferred"] >= 32 and steady > 0:
        # End to end (reads, screening and inference), so ``plan`` predicts what a run takes,
        # not what the model alone could do; tiny runs are too noisy to remember.
        remember_throughput(model.sha256, options.threads, counts["inferred"] / steady)
    exit_code = {"ok": 0, "cancelled": 0, "partial": 3}[status]
    store.finish_attempt(
        run_id, attempt, status=status, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(),
        row={"stats": stats, "cost": cost.to_dict(), "timings": stats["timings"]},
    )
    return RunResult(output=out, status=status, exit_code=exit_code, stats=stats, cost=cost, failed=failed)


class _ThreadViews:
    """One SceneView per reader thread and scene: GDAL dataset handles must not be shared
    between threads. Each thread keeps only its current scene open."""

    def __init__(self, plan: Plan, band_indexes) -> None:
        self._plan = plan
        self._bands = band_indexes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: List[SceneView] = []

    def get(self, scene_index: int) -> SceneView:
        current = getattr(self._local, "current", None)
        if current is not None and current[0] == scene_index:
            return current[1]
        if current is not None:
            current[1].close()
            with self._lock:
                self._all.remove(current[1])
        view = SceneView(self._plan.scenes[scene_index], self._plan.grid, self._bands[scene_index])
        self._local.current = (scene_index, view)
        with self._lock:
            self._all.append(view)
        return view

    def close(self) -> None:
        with self._lock:
            for view in self._all:
                view.close()
            self._all.clear()


def _predictor_class():
    try:
        from .inference import Predictor  # torch is imported here, not at package import
    except ImportError as exc:
        raise DependencyError(
            "cannot load the inference runtime: %s" % exc,
            hint="install the CPU build of torch into the engine's environment: "
            "pip install torch==2.13.0 (or re-run scripts/setup_engine.sh / the plugin's Set up engine)",
        ) from None
    return Predictor


def _reader(plan, band_indexes, todo_units, options, items, stop, timings, errors) -> None:
    """Extraction stage (I/O): screening then full reads, feeding the bounded queue.

    Reads run on ``options.readers`` threads (GDAL decompresses with the GIL released, so two
    readers use two cores); results keep the plan's order, so runs stay deterministic."""
    from concurrent.futures import ThreadPoolExecutor

    views = _ThreadViews(plan, band_indexes)
    pool = ThreadPoolExecutor(max_workers=max(1, options.readers), thread_name_prefix="groundbreak-read")
    chunk = max(8, 2 * options.batch_size)

    def extract(args):
        unit, ref = args
        t = time.perf_counter()
        item = extract_chip(views.get(unit.scene_index), ref, unit=unit, scene=plan.scenes[unit.scene_index],
                            grid=plan.grid, min_valid=options.min_valid)
        timings["read_s"] += time.perf_counter() - t  # summed over readers: CPU-ish seconds
        return item

    try:
        for unit, pending in todo_units:
            if stop.is_set():
                return
            scene = plan.scenes[unit.scene_index]
            t = time.perf_counter()
            dropped, keep = screen_unit(views.get(unit.scene_index), unit, pending, scene=scene, grid=plan.grid,
                                        min_valid=options.min_valid, margin=options.prefilter_margin)
            timings["screen_s"] += time.perf_counter() - t
            for rec in dropped:
                if not _put(items, rec, stop):
                    return
            # Bounded chunks keep memory flat: at most ``chunk`` chips are in flight per unit.
            for start in range(0, len(keep), chunk):
                for item in pool.map(extract, [(unit, ref) for ref in keep[start:start + chunk]]):
                    if not _put(items, item, stop):
                        return
    except BaseException as exc:  # surfaced in the main thread
        errors.append(exc)
    finally:
        pool.shutdown(wait=True)
        views.close()
        _put(items, None, stop)


def _put(items: "queue.Queue", item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _feature(d: DetectionRecord, run_id: str) -> Dict[str, object]:
    geom = shapely.from_wkb(d.geometry_wkb)
    return {
        "type": "Feature",
        "geometry": mapping(geom),
        "properties": {
            "chip_id": d.chip_id, "aoi_id": d.aoi_id, "scene_id": d.scene_id, "date": d.date,
            "score": round(d.score, 5), "label": d.label, "model_id": d.model_id, "run_id": run_id,
        },
    }


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return psutil.Process().memory_info().rss / 1e6


def _versions() -> Dict[str, str]:
    import rasterio

    out = {"groundbreak": __version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
           "numpy": np.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out
