"""``fleet run``: the ledger's units through an executor, with backpressure, retries and splitting.

The runner is the ledger's only writer. It keeps a bounded window of units in flight (twice the
workers by default, so every worker has its next unit queued and memory on the scheduler stays flat
however long the queue), records each unit's summary when it finishes, retries a failed unit after
an exponential backoff, and when a unit has used up its attempts splits it in halves so one bad tile
or one poison chip does not sink a thousand good ones. Splitting stops where it cannot help: at a
single chip, or when both halves fail the same way (the failure does not depend on the chips, e.g. a
scene that cannot be opened); those units are recorded as failed and their chips appear as
``failed`` in the aggregated output.

Crash safety: a unit is marked running before it is submitted, and done only after its part exists.
A runner that restarts after a crash adopts the complete parts of units it had submitted and
re-queues the rest, so a SIGKILL at any point loses and duplicates nothing.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from ..pipeline.options import RunStatus
from ..pipeline.units import UnitTask
from ..reporter import CancelToken, Reporter
from ..scene import Scene
from ..suitability import SceneFit
from .executors import Executor, Failure, FailureKind
from .ledger import Ledger, RunnerLock, RunSpec, UnitRow, UnitState
from .parts import PartStore, part_name
from .planning import usd_per_worker_second
from .work import FleetUnit, split_unit
from .worker import UnitJob

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a unit is tried before it is split, and how long to wait between tries."""

    max_attempts: int = 3
    backoff_s: float = 2.0  # before the first retry; doubles for each further one
    max_backoff_s: float = 120.0

    def delay(self, attempts: int, unit_id: str) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2 ** max(0, attempts - 1)))
        # A spread of ±25%, fixed per unit: retries of many units do not all land at once, and a
        # re-run waits exactly as long as the first run did.
        spread = int(hashlib.sha256(unit_id.encode()).hexdigest()[:4], 16) / 0xFFFF
        return base * (0.75 + 0.5 * spread)


@dataclass(frozen=True)
class FleetRunResult:
    status: RunStatus
    run_id: str
    units: Dict[str, int]
    chips_total: int
    chips_done: int
    chips_this_run: int
    detections: int
    failed_chips: int
    seconds: float
    chips_per_s: Optional[float]
    worker_seconds: float
    cost_usd: float
    executor: Dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def stats(self) -> Dict[str, Any]:
        return {"status": self.status.value, "run_id": self.run_id, "units": dict(self.units),
                "chips_total": self.chips_total, "chips_done": self.chips_done,
                "chips_this_run": self.chips_this_run, "detections": self.detections,
                "failed_chips": self.failed_chips, "seconds": round(self.seconds, 3),
                "chips_per_s": self.chips_per_s, "worker_seconds": round(self.worker_seconds, 3),
                "cost_usd": round(self.cost_usd, 6), "executor": dict(self.executor)}


def failure_signature(error: str) -> str:
    """The part of a recorded failure that says what went wrong, without which unit or worker."""
    kind, _, message = error.partition(": ")
    if kind == FailureKind.WORKER_LOST.value:
        return kind
    if message.startswith("unit ") and " failed on " in message:
        message = message.split(": ", 1)[-1]
    return "%s: %s" % (kind, message)


class _Rate:
    """Chips per second over the last minute of completions (ETA on a changing fleet)."""

    def __init__(self, horizon_s: float = 60.0) -> None:
        self.horizon = horizon_s
        self.events: Deque[Tuple[float, int]] = collections.deque()
        self.started = time.monotonic()

    def add(self, chips: int) -> None:
        self.events.append((time.monotonic(), chips))

    def per_s(self) -> Optional[float]:
        now = time.monotonic()
        while self.events and now - self.events[0][0] > self.horizon:
            self.events.popleft()
        if not self.events:
            return None
        span = max(now - max(self.started, now - self.horizon), 1e-6)
        return sum(c for _, c in self.events) / span


class FleetRunner:
    """One runner attempt over a ledger (see the module docstring). The executor must be started."""

    def __init__(self, ledger_path: "str | Path", executor: Executor, *, policy: Optional[RetryPolicy] = None,
                 window: Optional[int] = None, reporter: Optional[Reporter] = None,
                 cancel: Optional[CancelToken] = None, poll_s: float = 0.25) -> None:
        self.ledger_path = Path(ledger_path)
        self.executor = executor
        self.policy = policy or RetryPolicy()
        self.window = window
        self.reporter = reporter or Reporter()
        self.cancel = cancel or CancelToken()
        self.poll_s = poll_s
        self.ready: Deque[str] = collections.deque()
        self.delayed: List[Tuple[float, int, str]] = []  # (not before, order, unit id)
        self.in_flight: Dict[Any, Tuple[str, float, int]] = {}  # handle -> (unit id, submitted, chips)
        self._order = 0
        self._rate = _Rate()
        self._last_progress = 0.0
        self.chips_this_run = 0
        self.busy_s = 0.0

    # -- the attempt -------------------------------------------------------------------------------
    def run(self) -> FleetRunResult:
        t0 = time.perf_counter()
        with RunnerLock(self.ledger_path):
            ledger = Ledger(self.ledger_path)
            try:
                self.ledger, self.spec = ledger, ledger.spec
                self.parts = PartStore(self.spec.parts)
                self.parts.prepare()
                self._scenes, self._fits = ledger.scenes(), ledger.fits()
                self._recover()
                self._queue()
                workers = self.executor.workers
                self.attempt = ledger.start_runner(executor=self.executor.name, workers=workers,
                                                   cores_per_worker=self.spec.threads)
                self.reporter.stage("infer", "fleet run %s: %d unit(s) to do on %s (%d worker(s))" % (
                    self.spec.run_id, len(self.ready) + len(self.delayed), self.executor.name, workers))
                status = RunStatus.FAILED
                try:
                    status = self._loop()
                finally:
                    self._stop_in_flight()
                    status = self._final_status(status)
                    ledger.update_runner(self.attempt, status=status.value, chips=self.chips_this_run,
                                         units=self._units_this_run, busy_seconds=self.busy_s,
                                         workers=self.executor.workers, finished=True)
                return self._result(status, time.perf_counter() - t0)
            finally:
                ledger.close()

    _units_this_run = 0

    def _recover(self) -> None:
        """Units a crashed runner had submitted: adopt their complete parts, re-queue the rest."""
        for row in self.ledger.rows([UnitState.RUNNING]):
            part = self.parts.find(part_name(self.spec.run_id, row.unit_id), run_id=self.spec.run_id,
                                   unit_id=row.unit_id)
            if part is not None and len(part.chips) == row.chips and part.summary.get("unit_id") == row.unit_id:
                summary = dict(part.summary, part=part_name(self.spec.run_id, row.unit_id))
                self.ledger.record_done(row.unit_id, summary, runner_attempt=None, submitted=None)
                log.info("unit %s: adopted the part a stopped runner's worker had written", row.unit_id)
            else:
                self.ledger.requeue([row.unit_id])
        for row in self.ledger.rows([UnitState.FAILED]):  # a decision the crash interrupted
            if row.parent is not None:
                self._settle_halves(row.parent)

    def _queue(self) -> None:
        now = time.time()
        for row in self.ledger.rows([UnitState.PENDING]):
            self._enqueue(row.unit_id, row.next_try if row.next_try > now else 0.0)

    def _enqueue(self, unit_id: str, not_before: float = 0.0, front: bool = False) -> None:
        if not_before > time.time():
            self._order += 1
            heapq.heappush(self.delayed, (not_before, self._order, unit_id))
        elif front:
            self.ready.appendleft(unit_id)
        else:
            self.ready.append(unit_id)

    def _loop(self) -> RunStatus:
        while True:
            if self.cancel.cancelled:
                return RunStatus.CANCELLED
            self._release_delayed()
            self._fill()
            if not self.in_flight:
                if not self.ready and not self.delayed:
                    return RunStatus.OK
                self._report()
                wait = self.delayed[0][0] - time.time() if self.delayed else self.poll_s
                time.sleep(min(max(wait, 0.0), self.poll_s))
                continue
            for handle in self.executor.wait(list(self.in_flight), timeout=self.poll_s):
                self._finished(handle)
            self._report()

    def _release_delayed(self) -> None:
        now = time.time()
        while self.delayed and self.delayed[0][0] <= now:
            _, _, unit_id = heapq.heappop(self.delayed)
            self.ready.append(unit_id)

    def _fill(self) -> None:
        window = self.window or max(2, 2 * self.executor.workers)
        while self.ready and len(self.in_flight) < window and not self.cancel.cancelled:
            unit_id = self.ready.popleft()
            row = self.ledger.row(unit_id)
            if row.state is not UnitState.PENDING:
                continue
            job = self._job(self.ledger.unit(unit_id), row.attempts + 1)
            self.ledger.mark_running(unit_id)  # before submitting: a crash now re-queues, never loses
            handle = self.executor.submit(job)
            self.in_flight[handle] = (unit_id, time.time(), row.chips)

    def _job(self, unit: FleetUnit, attempt: int) -> UnitJob:
        return build_job(self.spec, self._scenes, self._fits, unit, attempt, self.parts)

    # -- outcomes ----------------------------------------------------------------------------------
    def _finished(self, handle: Any) -> None:
        unit_id, submitted, chips = self.in_flight.pop(handle)
        outcome = self.executor.outcome(handle)
        if isinstance(outcome, dict) and (outcome.get("unit_id") != unit_id or outcome.get("chips") != chips):
            outcome = Failure(FailureKind.EXCEPTION, "unit %s came back with %s chip(s) of unit %s, not %d" % (
                unit_id, outcome.get("chips"), outcome.get("unit_id"), chips))
        if isinstance(outcome, dict):
            self.ledger.record_done(unit_id, outcome, runner_attempt=self.attempt, submitted=submitted)
            self.chips_this_run += chips
            self._units_this_run += 1
            self.busy_s += float(outcome.get("seconds", 0.0))
            self._rate.add(chips)
            row = self.ledger.row(unit_id)
            if row.parent is not None:
                self._settle_halves(row.parent)
            return
        self._failed(unit_id, outcome, submitted)

    def _failed(self, unit_id: str, failure: Failure, submitted: float) -> None:
        error = "%s: %s" % (failure.kind.value, failure.message)
        row = self.ledger.row(unit_id)
        exhausted = row.attempts + 1 >= self.policy.max_attempts
        delay = 0.0 if exhausted else self.policy.delay(row.attempts + 1, unit_id)
        self.ledger.record_failure(unit_id, kind=failure.kind.value, error=error, next_try=time.time() + delay,
                                   runner_attempt=self.attempt, submitted=submitted,
                                   state=UnitState.FAILED if exhausted else UnitState.PENDING)
        if not exhausted:
            self.reporter.warning("unit_retry", "unit %s failed (attempt %d of %d), retrying in %.0f s: %s" % (
                unit_id, row.attempts + 1, self.policy.max_attempts, delay, failure.message),
                "nothing to do: the runner retries it")
            self._enqueue(unit_id, time.time() + delay)
            return
        self.reporter.warning("unit_failed", "unit %s (%d chip(s)) failed %d time(s): %s" % (
            unit_id, row.chips, row.attempts + 1, failure.message),
            "it is split to isolate the chips at fault; see `groundbreak fleet status`")
        if row.parent is None:
            if row.chips > 1:
                self._split(row)
        else:
            self._settle_halves(row.parent)

    def _settle_halves(self, parent: str) -> None:
        """Once both halves of a split unit are finished: split each failed half further, unless
        both failed the same way (then splitting cannot help)."""
        halves = self.ledger.children(parent)
        if any(h.state in (UnitState.PENDING, UnitState.RUNNING) for h in halves):
            return
        failed = [h for h in halves if h.state is UnitState.FAILED]
        if not failed:
            return
        if len(failed) == len(halves) == 2 and failure_signature(failed[0].error) == failure_signature(failed[1].error):
            return
        for h in failed:
            if h.chips > 1:
                self._split(h)

    def _split(self, row: UnitRow) -> None:
        halves = split_unit(self.ledger.unit(row.unit_id))
        self.ledger.split(row.unit_id, halves)
        for h in reversed(halves):  # next in line: narrowing a failure down comes first
            self._enqueue(h.unit_id, front=True)

    def _stop_in_flight(self) -> None:
        """On cancel or error: cancel what is in flight and put it back in the queue, attempts untouched."""
        if not self.in_flight:
            return
        handles = list(self.in_flight)
        try:
            self.executor.cancel(handles)
        except Exception as exc:  # the executor may be the thing that failed
            log.warning("could not cancel %d unit(s) in flight: %s", len(handles), exc)
        self.ledger.requeue([u for u, _, _ in self.in_flight.values()])
        self.in_flight.clear()

    # -- reporting ---------------------------------------------------------------------------------
    def _counts(self) -> Tuple[int, int, Dict[str, Any]]:
        states = self.ledger.state_counts()
        total = sum(v["chips"] for k, v in states.items() if k != UnitState.SPLIT.value)
        done = states[UnitState.DONE.value]["chips"] + states[UnitState.FAILED.value]["chips"]
        totals = self.ledger.totals()
        counts = {"units_%s" % k: v["units"] for k, v in states.items()}
        counts.update(inferred=int(totals["inferred"]), dropped=int(totals["dropped"]),
                      failed=self.ledger.failed_chips(),
                      detections=int(totals["detections"]), in_flight=len(self.in_flight))
        return done, total, counts

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        done, total, counts = self._counts()
        rate = self._rate.per_s()
        eta = int(round((total - done) / rate)) if rate else None
        cost = self.ledger.totals()["seconds"] * usd_per_worker_second(self.spec)
        self.reporter.emit("progress", stage="infer", done=done, total=total, counts=counts,
                           chips_per_s=None if rate is None else round(rate, 2), eta_s=eta,
                           cost_usd=round(cost, 6))

    def _final_status(self, status: RunStatus) -> RunStatus:
        self._report(force=True)
        if status is not RunStatus.OK:
            return status
        if self.ledger.failed_chips():
            return RunStatus.PARTIAL
        return status

    def _result(self, status: RunStatus, seconds: float) -> FleetRunResult:
        done, total, counts = self._counts()
        totals = self.ledger.totals()
        states = self.ledger.state_counts()
        return FleetRunResult(
            status=status, run_id=self.spec.run_id, units={k: v["units"] for k, v in states.items()},
            chips_total=total, chips_done=done, chips_this_run=self.chips_this_run,
            detections=int(totals["detections"]), failed_chips=int(counts["failed"]), seconds=seconds,
            chips_per_s=round(self.chips_this_run / seconds, 2) if seconds > 0 else None,
            worker_seconds=float(totals["seconds"]),
            cost_usd=float(totals["seconds"]) * usd_per_worker_second(self.spec),
            executor=self.executor.describe(),
        )


def build_job(spec: RunSpec, scenes: Sequence[Scene], fits: Sequence[SceneFit], unit: FleetUnit, attempt: int,
              parts: PartStore) -> UnitJob:
    """A fleet unit as the job a worker runs: one self-contained ``UnitTask`` per block."""
    scene = scenes[unit.scene_index]
    bands = fits[unit.scene_index].band_indexes
    tasks = tuple(UnitTask(unit_id=block_id, scene=scene, grid=spec.grid, band_indexes=bands, chips=chips,
                           rule=spec.rule, model=spec.model, runtime=spec.runtime, batch_size=spec.batch_size,
                           threads=spec.threads, readers=spec.readers, force_runtime=spec.force_runtime)
                  for block_id, chips in unit.blocks)
    return UnitJob(unit_id=unit.unit_id, run_id=spec.run_id, attempt=attempt, tasks=tasks, parts=parts)


def job_for(ledger: Ledger, unit_id: str, attempt: int = 1) -> UnitJob:
    """The job of one unit of ``ledger`` (to run a unit by hand, e.g. to debug it in this process)."""
    return build_job(ledger.spec, ledger.scenes(), ledger.fits(), ledger.unit(unit_id), attempt,
                     PartStore(ledger.spec.parts))


def run_fleet(ledger: "str | Path", executor: Executor, **kwargs: Any) -> FleetRunResult:
    """Run (or resume) every pending unit of ``ledger`` on ``executor`` (started and closed here)."""
    with executor:
        return FleetRunner(ledger, executor, **kwargs).run()
