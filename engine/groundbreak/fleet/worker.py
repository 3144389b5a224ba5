"""What runs on a worker: one fleet unit read, screened and inferred there, its part written there.

``run_job`` is the only function an executor ships. It runs ``pipeline.run_unit`` on each block of
the unit (the model comes from the per-process ``shared_predictor`` cache, so a worker loads it once),
writes the unit's part file atomically and returns a small JSON-able summary; pixels and records
never travel back to the runner. The process is set up once: thread counts for torch/OpenMP/GDAL
and, where several workers share a node, a core slot of its own (``cores.claim_cores``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import GroundbreakError
from ..names import ChipStatus
from ..pipeline.units import UnitTask, run_unit
from ..store import ChipRecord, DetectionRecord
from .cores import claim_cores, thread_environment
from .parts import PartStore

log = logging.getLogger(__name__)

_setup_lock = threading.Lock()
_setup_done = False


class UnitFailure(GroundbreakError, RuntimeError):
    """A unit that raised on its worker, carried back to the runner as plain text (always picklable)."""

    code = "unit_failed"
    retryable = True

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.args = (message, hint)  # how Exception pickles itself: cls(*args)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class UnitJob:
    """A fleet unit as shipped to a worker: its blocks as self-contained tasks and where its part goes."""

    unit_id: str
    run_id: str
    attempt: int
    tasks: Tuple[UnitTask, ...]
    parts: PartStore
    pin_cores: bool = True

    @property
    def chips(self) -> int:
        return sum(len(t.chips) for t in self.tasks)


def configure_process(threads: int, *, pin: bool = True) -> Optional[Tuple[int, ...]]:
    """Once per worker process: thread counts, then (if asked) a core slot of its own."""
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return None
        os.environ.update(thread_environment(threads))
        cores = claim_cores(threads) if pin else None
        _setup_done = True
        return cores


def worker_id() -> str:
    return "%s:%d" % (socket.gethostname(), os.getpid())


def run_job(job: UnitJob) -> Dict[str, Any]:
    """Process one fleet unit on this worker; returns its summary (the part is already written)."""
    if not job.tasks:
        raise UnitFailure("unit %s has no chips" % job.unit_id)
    configure_process(job.tasks[0].threads, pin=job.pin_cores)
    t0, cpu0 = time.perf_counter(), time.process_time()
    chips: List[ChipRecord] = []
    detections: List[DetectionRecord] = []
    timings: Dict[str, float] = {}
    runtime = ""
    failure: Optional[UnitFailure] = None
    try:
        for task in job.tasks:
            result = run_unit(task)
            chips.extend(result.chips)
            detections.extend(result.detections)
            runtime = result.runtime
            for key, value in result.timings.items():
                timings[key] = round(timings.get(key, 0.0) + value, 4)
    except Exception as exc:  # anything: the runner decides whether to retry or split
        text = exc.message if isinstance(exc, GroundbreakError) else str(exc)
        failure = UnitFailure("unit %s failed on %s: %s: %s" % (job.unit_id, worker_id(), type(exc).__name__, text),
                              hint=exc.hint if isinstance(exc, GroundbreakError) else "")
    if failure is not None:
        # Raised outside the handler: no chained context (GDAL handles, tracebacks) to pickle back.
        raise failure
    counts = {s.value: 0 for s in ChipStatus}
    for rec in chips:
        counts[rec.status] += 1
    summary: Dict[str, Any] = {
        "unit_id": job.unit_id, "attempt": job.attempt, "chips": len(chips), "counts": counts,
        "detections": len(detections), "runtime": runtime, "worker": worker_id(),
        "seconds": round(time.perf_counter() - t0, 4), "cpu_seconds": round(time.process_time() - cpu0, 4),
        "timings": timings, "failed_chips": [c.chip_id for c in chips if c.status == ChipStatus.FAILED.value],
    }
    name, size = job.parts.write(job.run_id, job.unit_id, chips, detections, summary)
    summary["part"] = name
    summary["part_bytes"] = size
    return summary

