"""Give each worker process on a node its own cores.

Several single-threaded workers on one node must not share a core: OpenVINO pins its threads to
cores by default (two 1-thread processes both land on core 0 and get half the throughput), and
torch, OpenMP and GDAL each start as many threads as the node has cores unless told otherwise. A
worker therefore claims a *core slot* — a lock file per slot in the node's temporary folder, held
for the life of the process and released by the kernel however the process ends — and restricts
itself (``sched_setaffinity``) to that slot's cores. This works the same under every executor (a
process pool, a Dask ``LocalCluster``, ``dask worker --nworkers N`` on a node) without knowing how
many siblings the process has. ``GROUNDBREAK_PIN_CORES=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import IO, List, Optional, Tuple

log = logging.getLogger(__name__)

_held: List[IO[bytes]] = []  # the open lock file of this process's slot (kept open until exit)
_claimed: Optional[Tuple[int, ...]] = None


def thread_environment(threads: int) -> dict:
    """Environment for a worker process with ``threads`` compute threads (set before torch loads)."""
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "GDAL_NUM_THREADS": "1",
            "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "256")}


def claim_cores(per_worker: int, *, lock_dir: Optional[str] = None) -> Optional[Tuple[int, ...]]:
    """Pin this process to a free slot of ``per_worker`` cores; the cores, or None when not pinned."""
    global _claimed
    if _claimed is not None:
        return _claimed
    if os.environ.get("GROUNDBREAK_PIN_CORES", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        import fcntl
    except ImportError:  # not on this platform
        return None
    cores = sorted(os.sched_getaffinity(0))
    per_worker = max(1, per_worker)
    slots = len(cores) // per_worker
    if slots < 2:
        return None  # one worker owns the node: nothing to share
    folder = lock_dir or os.path.join(tempfile.gettempdir(), "groundbreak-cores-%d" % os.getuid())
    os.makedirs(folder, exist_ok=True)
    for slot in range(slots):
        fh = open(os.path.join(folder, "slot-%d-of-%d.lock" % (slot, slots)), "wb")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        mine = tuple(cores[slot * per_worker:(slot + 1) * per_worker])
        os.sched_setaffinity(0, mine)
        _held.append(fh)
        _claimed = mine
        log.info("worker %d pinned to core(s) %s", os.getpid(), ",".join(map(str, mine)))
        return mine
    log.warning("more workers than core slots of %d core(s) on this node: worker %d is not pinned",
                per_worker, os.getpid())
    return None
