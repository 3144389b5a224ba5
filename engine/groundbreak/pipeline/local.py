"""The in-process runner (the CLI's and the plugin's): units through two overlapped stages.

A reader thread (with ``--readers`` threads for decompression, which releases the GIL) screens and
extracts unit after unit into a bounded queue; the main thread batches ready chips across units,
runs the forward passes and commits each batch's chips and detections in one transaction, so a
killed run resumes exactly. The model loads in the background while the first chips are read.
Nothing in the output is touched until everything that can fail at start (inputs, the resume guard,
the model and its runtime) has been checked; ``--overwrite`` replaces the old output only once the
new run has committed its first batch.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

from ..cost import cost_of, remember_throughput
from ..errors import OutputError
from ..model import ModelPackage
from ..names import DROP_REASONS, PROGRESS_COUNTS, ChipStatus
from ..plan import Plan, fitted
from ..reporter import CancelToken, Reporter
from ..store import ChipRecord, DetectionRecord, DetectionStore
from .batches import BatchStage
from .options import RunOptions, RunResult, RunStats, RunStatus
from .provenance import attempt_row, describe_difference, run_fingerprint, short_id
from .stages import Predictor, ReadyChip, Screened, detection_feature
from .units import UnitTask, ViewPool, read_unit, shared_predictor, unit_tasks

log = logging.getLogger(__name__)


def run_detection(plan: Plan, model: ModelPackage, out: Path, *, options: Optional[RunOptions] = None,
                  reporter: Optional[Reporter] = None, cancel: Optional[CancelToken] = None,
                  command: str = "", startup_s: float = 0.0) -> RunResult:
    """Run the plan and write ``out``. Re-running the same inputs into the same ``out`` resumes.

    ``startup_s``: what the calling process spent before the run (imports, reading inputs); a CLI
    passes it so ``plan`` can predict what a user waits for, start to end."""
    options = options or RunOptions()
    options.validate()
    run = LocalRun(fitted(plan, model), model, Path(out), options, reporter or Reporter(), cancel or CancelToken(),
                   command)
    run.startup_s = startup_s
    return run.execute()


class _ModelLoader:
    """Builds the predictor on a background thread, so reading starts at once."""

    def __init__(self, model: ModelPackage, options: RunOptions) -> None:
        self._result: List[object] = []
        self._thread = threading.Thread(target=self._load, args=(model, options), name="groundbreak-model",
                                        daemon=True)
        self._thread.start()

    def _load(self, model: ModelPackage, options: RunOptions) -> None:
        try:
            self._result.append(shared_predictor(model, runtime=options.runtime, threads=options.threads,
                                                 batch_size=options.batch_size, force_runtime=options.force_runtime,
                                                 streams=options.inference_streams))
        except BaseException as exc:  # re-raised on the main thread by get()
            self._result.append(exc)

    def get(self, cancel: CancelToken) -> Optional[Predictor]:
        while self._thread.is_alive():
            if cancel.cancelled:
                return None
            self._thread.join(0.05)
        value = self._result[0]
        if isinstance(value, BaseException):
            raise value
        return value  # type: ignore[return-value]


class _Reader:
    """The I/O stage: screening and reads of every task, in order, into a bounded queue."""

    def __init__(self, tasks: Sequence[UnitTask], options: RunOptions, timings: Dict[str, float],
                 model: ModelPackage) -> None:
        self.items: "queue.Queue[Optional[Screened]]" = queue.Queue(maxsize=max(4, options.batch_size * 3))
        self._stop = threading.Event()
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(tasks, options.readers, timings, model),
                                        name="groundbreak-reader", daemon=True)
        self._thread.start()

    def _run(self, tasks: Sequence[UnitTask], readers: int, timings: Dict[str, float], model: ModelPackage) -> None:
        views = ViewPool()
        pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="groundbreak-read")
        try:
            for task in tasks:
                for item in read_unit(task, views, pool, timings=timings, model=model, stopped=self._stop.is_set):
                    if not self._put(item):
                        return
        except BaseException as exc:  # surfaced on the main thread
            self.error = exc
        finally:
            pool.shutdown(wait=True)
            views.close()
            self._put(None)

    def _put(self, item: Optional[Screened]) -> bool:
        while not self._stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self.items.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


class _Output:
    """The output GeoPackage: an existing one is resumed in place; a new one (or, with
    ``--overwrite``, the replacement of an existing one) is written beside it and moved into place
    once the first batch is committed, so a run that fails at start leaves the old output, or
    nothing, as it was."""

    def __init__(self, out: Path, epsg: int, overwrite: bool) -> None:
        self.final = out
        self.staged = overwrite or not out.exists()
        path = out.with_name(".%s.new-%d.gpkg" % (out.stem, os.getpid())) if self.staged else out
        if self.staged and path.exists():
            path.unlink()
        self.store = DetectionStore(path, epsg=epsg)

    def committed(self) -> None:
        if self.staged:
            self.store.move_to(self.final)
            self.staged = False

    def close(self) -> None:
        self.store.close()
        if self.staged:  # the new run never committed: what was there stays as it was
            self.store.path.unlink(missing_ok=True)


class LocalRun:
    """One attempt of a run in this process (see the module docstring)."""

    def __init__(self, plan: Plan, model: ModelPackage, out: Path, options: RunOptions, reporter: Reporter,
                 cancel: CancelToken, command: str) -> None:
        self.plan, self.model, self.out, self.options = plan, model, out, options
        self.reporter, self.cancel, self.command = reporter, cancel, command
        self.fingerprint = run_fingerprint(plan, model, options)
        self.run_id = short_id(self.fingerprint)
        self.counts: Dict[str, int] = {k: 0 for k in PROGRESS_COUNTS}
        self.counts["planned"] = plan.chips_planned
        self.timings: Dict[str, float] = {k: 0.0 for k in ("screen_s", "read_s", "infer_s", "write_s", "wait_s",
                                                           "model_load_s")}
        self.done = 0
        self.total = 0
        self.forward_batch = 0
        self.startup_s = 0.0
        self._last_progress = 0.0

    # -- the attempt ------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        self.timings["startup_s"] = self.startup_s
        loader = _ModelLoader(self.model, self.options)
        output = _Output(self.out, self.plan.grid.epsg, self.options.overwrite)
        reader: Optional[_Reader] = None
        try:
            tasks = self._pending_tasks(output.store, fresh=output.staged)
            reader = _Reader(tasks, self.options, self.timings, self.model)
            predictor = loader.get(self.cancel)
            self.timings["model_load_s"] = time.perf_counter() - t0
            if predictor is None:  # cancelled while the model loaded: nothing was written
                return self._result(RunStatus.CANCELLED, {}, 0, "", t0, cpu0)
            self._announce(predictor)
            attempt = output.store.start_attempt(
                run_id=self.run_id, fingerprint=self.fingerprint, started=_now(),
                row=attempt_row(self.plan, self.model, self.options, command=self.command, runtime=predictor.runtime))
            try:
                status = self._loop(reader, predictor, output)
                return self._finish(output, attempt, status, predictor, t0, cpu0)
            except BaseException:
                self._record_failure(output.store, attempt, t0)
                raise
        finally:
            if reader is not None:
                reader.stop()
            output.close()

    def _pending_tasks(self, store: DetectionStore, *, fresh: bool) -> List[UnitTask]:
        previous = [] if fresh else store.fingerprints()
        if previous and self.fingerprint not in previous:
            raise OutputError(
                "%s already holds results of a different run (changed: %s)" % (
                    self.out, describe_difference(store.latest_attempt(), self.plan, self.model, self.options)),
                hint="write to another --out, or pass --overwrite to replace it",
            )
        done = set() if fresh else store.finished_keys()
        if previous:
            self._warn_changed_scenes(store)
        self.counts["resumed"] = len(done)
        o = self.options
        tasks = unit_tasks(self.plan, self.model, rule=o.drop_rule, runtime=o.runtime, batch_size=o.batch_size,
                           threads=o.threads, readers=o.readers, force_runtime=o.force_runtime, done=done)
        self.total = sum(len(t.chips) for t in tasks)
        if done:
            self.reporter.stage("plan", "resuming: %d chip(s) already done, %d to go" % (len(done), self.total))
        return tasks

    def _warn_changed_scenes(self, store: DetectionStore) -> None:
        before = store.previous_scene_hashes(self.run_id)
        for scene in self.plan.scenes:
            old = before.get(scene.scene_id)
            if old and scene.quick_hash and old != scene.quick_hash:
                self.reporter.warning(
                    "scene_changed",
                    "%s changed since the earlier attempt of this run: chips already done keep their results, "
                    "the rest (and failed chips) are read from the new file" % scene.scene_id,
                    "pass --overwrite to redo every chip from the current files",
                )

    def _announce(self, predictor: Predictor) -> None:
        model = self.model
        if model.demo:
            self.reporter.warning(
                "demo_model",
                "model %s has DEMO weights: trained on synthetic scenes, not validated on real construction "
                "imagery" % model.model_id,
                "treat detections as a demonstration; train on your own labels for real use",
            )
        self.reporter.stage("infer", "model %s ready on runtime %s, batch %d (%.1f s to load)" % (
            model.model_id, predictor.runtime, predictor.batch_size, self.timings["model_load_s"]))
        self.reporter.stage("screen", "%d chip(s) in %d work unit(s) over %d scene(s)" % (
            self.total, len(self.plan.units), len(self.plan.scenes)))
        self.reporter.progress("infer", 0, self.total, self.counts)

    # -- the batch loop -----------------------------------------------------------------------------
    def _loop(self, reader: _Reader, predictor: Predictor, output: _Output) -> RunStatus:
        stage = BatchStage(predictor, self.model, self.plan.grid,
                           lambda chips, dets, n: self._commit(output, chips, dets, n), self.timings)
        try:
            status = self._feed(reader, predictor, stage)
            stage.drain()
        finally:
            stage.close()
            self.forward_batch = stage.forward_batch
        self.reporter.progress("infer", self.done, self.total, self.counts)
        return status

    def _feed(self, reader: _Reader, predictor: Predictor, stage: BatchStage) -> RunStatus:
        batch: List[ReadyChip] = []
        records: List[ChipRecord] = []
        while True:
            if self.cancel.cancelled:
                # Decisions already made (drops) are kept; chips read but not inferred are redone on resume.
                stage.submit([], records)
                return RunStatus.CANCELLED
            t = time.perf_counter()
            item = reader.items.get()
            self.timings["wait_s"] += time.perf_counter() - t
            if item is None:
                break
            if isinstance(item, ReadyChip):
                batch.append(item)
                if len(batch) >= predictor.batch_size:
                    stage.submit(batch, records)
                    batch, records = [], []
            else:
                records.append(item)
                if len(records) >= 4 * predictor.batch_size and not batch:
                    stage.submit([], records)
                    records = []
        if reader.error is not None:
            raise reader.error
        stage.submit(batch, records)
        return RunStatus.OK

    def _commit(self, output: _Output, chips: List[ChipRecord], detections: Tuple[DetectionRecord, ...],
                inferred: int) -> None:
        """One batch's chips and detections in one transaction (called in submission order)."""
        if chips:
            t = time.perf_counter()
            output.store.commit(chips, detections, run_id=self.run_id)
            output.committed()
            self.timings["write_s"] += time.perf_counter() - t
            for rec in chips:
                self.counts[ChipStatus(rec.status).count_key] += 1
            self.counts["detections"] += len(detections)
            self.done += len(chips)
            if detections:
                features = [detection_feature(d, self.run_id) for d in detections]
                self.reporter.features(self.plan.grid.crs_string, features)
        now = time.perf_counter()
        if inferred or now - self._last_progress > 0.5:
            self.reporter.progress("infer", self.done, self.total, self.counts)
            self._last_progress = now

    # -- the end --------------------------------------------------------------------------------------
    def _finish(self, output: _Output, attempt: int, status: RunStatus, predictor: Predictor, t0: float,
                cpu0: float) -> RunResult:
        self.reporter.stage("write", "finalising %s" % self.out)
        store = output.store
        store.finalize()
        failed = tuple(store.failed_chips())
        if status is RunStatus.OK and failed:
            status = RunStatus.PARTIAL
        model_s = getattr(getattr(predictor, "timing", None), "model_seconds", None)
        if model_s:
            self.timings["model_s"] = float(model_s)
        result = self._result(status, store.counts(), attempt, predictor.runtime, t0, cpu0, failed)
        steady = result.stats.seconds - self.timings["model_load_s"]
        if self.counts["inferred"] >= 32 and steady > 0:
            # End to end (reads, screening and inference), so ``plan`` predicts what a run takes, not
            # what the model alone could do; tiny runs are too noisy to remember.
            remember_throughput(self.model.sha256, self.options.threads, self.counts["inferred"] / steady,
                                model_load_s=self.timings["model_load_s"] + self.timings["startup_s"])
        store.finish_attempt(self.run_id, attempt, status=status.value, finished=_now(), row={
            "stats": result.stats.to_dict(), "cost": result.cost.to_dict(), "timings": result.stats.timings})
        return result

    def _result(self, status: RunStatus, totals: Dict[str, int], attempt: int, runtime: str, t0: float, cpu0: float,
                failed: tuple = ()) -> RunResult:
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        plan, o = self.plan, self.options
        scanned = plan.scanned_km2 * (self.done / plan.chips_planned) if plan.chips_planned else 0.0
        cost = cost_of(wall, price_per_hour=o.price_per_hour, km2=scanned, chips=self.done)
        resampled = [{"scene_id": s.scene_id, "from_m": round(f.resolution_m, 3), "to_m": f.model_gsd}
                     for s, f in zip(plan.scenes, plan.fits) if f.resampled]
        stats = RunStats(
            run_id=self.run_id, attempt=attempt, status=status.value, aoi_km2=round(plan.aoi_km2, 4),
            scanned_km2=round(plan.scanned_km2, 4), scenes=len(plan.scenes), ground_chips=plan.ground_chips,
            chips_planned=plan.chips_planned, chips_resumed=self.counts["resumed"], chips_processed=self.done,
            chips_dropped={k: totals.get("dropped-" + k, 0) for k in DROP_REASONS},
            chips_inferred=totals.get(ChipStatus.INFERRED.value, 0),
            chips_failed=totals.get(ChipStatus.FAILED.value, 0),
            detections=totals.get("detections", 0), seconds=round(wall, 3), cpu_seconds=round(cpu, 3),
            chips_per_s=round(self.done / wall, 2) if wall > 0 else None,
            inferred_per_s=round(self.counts["inferred"] / wall, 2) if wall > 0 else None,
            km2_per_h=round(scanned / (wall / 3600.0), 2) if wall > 0 and scanned else None,
            peak_rss_mb=round(_peak_rss_mb(), 1), runtime=runtime, batch_size=o.batch_size,
            forward_batch=self.forward_batch, threads=o.threads, readers=o.readers, model_id=self.model.model_id,
            model_demo=self.model.demo, timings={k: round(v, 3) for k, v in self.timings.items()},
            resampled=resampled,
        )
        return RunResult(output=self.out, status=status, stats=stats, cost=cost, failed=failed)

    def _record_failure(self, store: DetectionStore, attempt: int, t0: float) -> None:
        try:
            store.finish_attempt(self.run_id, attempt, status=RunStatus.FAILED.value, finished=_now(), row={
                "stats": {"status": RunStatus.FAILED.value, "chips_processed": self.done,
                          "seconds": round(time.perf_counter() - t0, 3)}})
        except Exception as exc:  # the original error matters more than this bookkeeping
            log.warning("could not mark the attempt failed in %s: %s", store.path, exc)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return psutil.Process().memory_info().rss / 1e6
