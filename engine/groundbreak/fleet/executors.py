"""Where units run, behind one interface: in this process, a local process pool, or Dask distributed.

The runner only submits ``worker.run_job`` with a ``UnitJob``, waits for some handles to finish
and reads each one's outcome — a summary, or a ``Failure`` saying what went wrong (an exception on
the worker, a worker lost, a cancelled task). Everything else (the window, retries, splitting,
the ledger) is the runner's, identical for every executor.

- ``InProcessExecutor``: one unit at a time on a thread of this process (small ledgers, tests,
  debugging; no isolation: a crash of the unit is a crash of the runner).
- ``ProcessPoolExecutor``: ``concurrent.futures`` with spawned processes; no extra dependency. A
  worker that dies breaks the whole pool (Python's rule): every unit in flight then fails as
  ``worker_lost`` and the pool is rebuilt.
- ``DaskExecutor``: ``distributed`` (the ``fleet`` extra): a ``LocalCluster`` of process workers
  (``--local N``) or an existing scheduler (``--scheduler ADDRESS``). Dask reschedules the tasks of
  a dead worker itself; after ``distributed.scheduler.allowed-failures`` deaths a task fails with
  ``KilledWorker``, which the runner records as ``worker_lost``.
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process
import enum
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import DependencyError, UsageError
from .worker import UnitJob, configure_process, run_job

log = logging.getLogger(__name__)


class FailureKind(str, enum.Enum):
    EXCEPTION = "exception"  # the unit raised on its worker
    WORKER_LOST = "worker_lost"  # the worker process died (killed, out of memory, crashed)
    CANCELLED = "cancelled"  # the task was cancelled (runner stopping, cluster shutting down)


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str

    @property
    def signature(self) -> str:
        """What identifies "the same failure" on two halves of a split unit (unit ids left out)."""
        text = self.message
        if text.startswith("unit ") and " failed on " in text:
            text = text.split(": ", 1)[-1]  # drop "unit X failed on host:pid"
        return "%s: %s" % (self.kind.value, text)


Outcome = Union[Dict[str, Any], Failure]


class Executor:
    """The interface every executor implements."""

    name = "executor"

    def start(self) -> None:
        """Bring workers up (may take a while: a cluster starts, workers connect)."""

    @property
    def workers(self) -> int:
        """How many units can run at once now (the runner sizes its window from it)."""
        return 1

    def submit(self, job: UnitJob) -> Any:
        raise NotImplementedError

    def wait(self, handles: Sequence[Any], timeout: float) -> List[Any]:
        """The handles among ``handles`` that have finished (waiting up to ``timeout`` s for one)."""
        raise NotImplementedError

    def outcome(self, handle: Any) -> Outcome:
        raise NotImplementedError

    def cancel(self, handles: Sequence[Any]) -> None:
        for h in handles:
            h.cancel()

    def describe(self) -> Dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FuturesExecutor(Executor):
    """Shared by the in-process and process-pool executors (``concurrent.futures`` semantics)."""

    def wait(self, handles: Sequence[Any], timeout: float) -> List[Any]:
        done, _ = cf.wait(list(handles), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def outcome(self, handle: Any) -> Outcome:
        if handle.cancelled():
            return Failure(FailureKind.CANCELLED, "cancelled")
        exc = handle.exception()
        if exc is None:
            return handle.result()
        if isinstance(exc, concurrent.futures.process.BrokenProcessPool):
            return Failure(FailureKind.WORKER_LOST, "a pool worker died (%s)" % exc)
        return Failure(FailureKind.EXCEPTION, _describe(exc))


class InProcessExecutor(_FuturesExecutor):
    name = "in-process"

    def __init__(self, *, threads: int = 2) -> None:
        self.threads = threads
        self._pool: Optional[cf.ThreadPoolExecutor] = None

    def start(self) -> None:
        configure_process(self.threads, pin=False)
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="groundbreak-unit")

    def submit(self, job: UnitJob) -> Any:
        assert self._pool is not None, "start() the executor first"
        return self._pool.submit(run_job, job)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _pool_init(threads: int) -> None:
    configure_process(threads)


class ProcessPoolExecutor(_FuturesExecutor):
    name = "process-pool"

    def __init__(self, processes: int, *, threads: int = 1) -> None:
        if processes < 1:
            raise UsageError("--processes must be at least 1 (got %d)" % processes)
        self.processes = processes
        self.threads = threads
        self._pool: Optional[cf.ProcessPoolExecutor] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        # spawn, not fork: a forked child would share the runner's ledger connection and locks.
        return cf.ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_pool_init, initargs=(self.threads,))

    @property
    def workers(self) -> int:
        return self.processes

    def submit(self, job: UnitJob) -> Any:
        with self._lock:
            assert self._pool is not None, "start() the executor first"
            try:
                return self._pool.submit(run_job, job)
            except concurrent.futures.process.BrokenProcessPool:
                log.warning("the process pool broke (a worker died); starting a new one")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                return self._pool.submit(run_job, job)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Dask distributed: ``DaskExecutor(local=N)`` starts a LocalCluster, ``DaskExecutor(address=…)``
    joins a running scheduler."""

    name = "dask"

    def __init__(self, *, local: Optional[int] = None, address: Optional[str] = None, threads: int = 1,
                 dashboard: Optional[str] = ":0", client: Any = None) -> None:
        if (local is None) == (address is None) and client is None:
            raise UsageError("give exactly one of --local N or --scheduler ADDRESS")
        if local is not None and local < 1:
            raise UsageError("--local must be at least 1 (got %d)" % local)
        self.local = local
        self.address = address
        self.threads = threads
        self.dashboard = dashboard
        self.client = client
        self._owns_client = client is None
        self._cluster: Any = None

    def start(self) -> None:
        try:
            import distributed
        except ImportError:
            raise DependencyError("Dask distributed is not installed",
                                  hint="pip install 'groundbreak[fleet]' (or use --processes N)") from None
        if self.client is None:
            if self.local is not None:
                from .cores import thread_environment

                # Process workers, one task at a time each; thread counts fixed before torch loads.
                self._cluster = distributed.LocalCluster(
                    n_workers=self.local, threads_per_worker=1, processes=True,
                    dashboard_address=self.dashboard, env=thread_environment(self.threads))
                self.client = distributed.Client(self._cluster)
            else:
                self.client = distributed.Client(self.address, timeout="60s")
        self.client.register_plugin(make_worker_plugin(self.threads), name="groundbreak-worker-setup")

    @property
    def workers(self) -> int:
        if self.client is None:
            return 0
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) else \
            self.client.scheduler_info()
        return sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())

    def submit(self, job: UnitJob) -> Any:
        key = "groundbreak-%s-%s-a%d" % (job.run_id, job.unit_id, job.attempt)
        # Dask's own retries are off: the runner counts attempts and splits failing units.
        return self.client.submit(run_job, job, key=key, pure=False, retries=0)

    def wait(self, handles: Sequence[Any], timeout: float) -> List[Any]:
        import distributed

        try:
            distributed.wait(list(handles), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:  # distributed.TimeoutError is the builtin
            pass
        return [h for h in handles if h.done()]

    def outcome(self, handle: Any) -> Outcome:
        from distributed.scheduler import KilledWorker

        if handle.status == "cancelled":
            return Failure(FailureKind.CANCELLED, "cancelled")
        if handle.status == "error":
            exc = handle.exception()
            if isinstance(exc, KilledWorker):
                return Failure(FailureKind.WORKER_LOST, "KilledWorker: its worker died on every try (%s)" % exc)
            return Failure(FailureKind.EXCEPTION, _describe(exc))
        try:
            return handle.result()
        except Exception as exc:  # lost between done() and result() (e.g. scheduler restart)
            return Failure(FailureKind.WORKER_LOST, _describe(exc))

    def cancel(self, handles: Sequence[Any]) -> None:
        if handles and self.client is not None:
            self.client.cancel(list(handles))

    def describe(self) -> Dict[str, Any]:
        out = super().describe()
        if self.client is not None:
            out["scheduler"] = self.client.scheduler.address
            out["dashboard"] = self.client.dashboard_link
        return out

    def worker_pids(self) -> Dict[str, int]:
        """Worker address -> process id (tests kill one)."""
        return dict(self.client.run(os.getpid))

    def close(self) -> None:
        if self.client is not None and self._owns_client:
            try:
                self.client.unregister_worker_plugin("groundbreak-worker-setup")
            except Exception:  # the cluster may already be gone
                pass
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_worker_plugin(threads: int) -> Any:
    """The Dask ``WorkerPlugin`` that sets a worker up before its first task (threads, core slot);
    workers that join later get it too."""
    from distributed import WorkerPlugin

    class GroundbreakWorkerSetup(WorkerPlugin):
        name = "groundbreak-worker-setup"

        def __init__(self, threads: int) -> None:
            self.threads = threads

        def setup(self, worker: Any) -> None:
            configure_process(self.threads)

    return GroundbreakWorkerSetup(threads)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message if message.startswith("unit ") else "%s: %s" % (type(exc).__name__, message)
