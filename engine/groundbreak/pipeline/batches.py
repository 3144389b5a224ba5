"""The inference stage of the in-process runner: forward passes in flight, results in order.

A model compiled with several streams (OpenVINO: one infer request per stream, one thread each)
runs one batch per stream at a time: on this 2-core CPU two 1-thread streams did 12% more chips/s
than one 2-thread stream (no synchronisation inside a forward pass). Batches are submitted to
``streams`` inference threads and their results handed back in submission order, so outputs are
the same whatever the concurrency. With one stream the batch runs on the calling thread.
"""

from __future__ import annotations

import collections
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..grid import ChipGrid
from ..model import ModelPackage
from ..store import ChipRecord, DetectionRecord
from .stages import InferredBatch, Predictor, ReadyChip, infer

#: Called once per submitted batch, in order: (chip records, detections, chips inferred in it).
Commit = Callable[[List[ChipRecord], Tuple[DetectionRecord, ...], int], None]


class BatchStage:
    def __init__(self, predictor: Predictor, model: ModelPackage, grid: ChipGrid, commit: Commit,
                 timings: Dict[str, float]) -> None:
        self.predictor, self.model, self.grid = predictor, model, grid
        self._commit = commit
        self._timings = timings
        self.streams = max(1, int(getattr(predictor, "streams", 1)))
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="groundbreak-infer") \
            if self.streams > 1 else None
        # Batches in flight before the oldest is handed back: none when forward passes run here, so
        # each batch (and the plugin's first detection) is committed as soon as it is inferred.
        self._window = self.streams if self._pool is not None else 0
        # One input buffer per batch in flight (plus one being filled): reused, never reallocated.
        self._free: "queue.Queue[np.ndarray]" = queue.Queue()
        shape = (predictor.batch_size, len(model.bands), model.chip_size, model.chip_size)
        for _ in range(self.streams + 1):
            self._free.put(np.empty(shape, np.float32))
        self._pending: Deque[Tuple[Optional["Future[InferredBatch]"], List[ChipRecord], int]] = collections.deque()
        self.forward_batch = 0

    def submit(self, batch: Sequence[ReadyChip], records: List[ChipRecord]) -> None:
        """Queue a batch (possibly empty: records only) for inference, then hand back whatever is done."""
        future: Optional["Future[InferredBatch]"] = None
        if batch:
            self.forward_batch = max(self.forward_batch, min(len(batch), self.predictor.batch_size))
            if self._pool is None:
                future = Future()
                try:
                    future.set_result(self._infer(list(batch)))
                except Exception as exc:  # surfaces in order, after the batches before it are committed
                    future.set_exception(exc)
            else:
                future = self._pool.submit(self._infer, list(batch))
        self._pending.append((future, records, len(batch)))
        while len(self._pending) > self._window:
            self._hand_back()

    def drain(self) -> None:
        while self._pending:
            self._hand_back()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _infer(self, batch: List[ReadyChip]) -> InferredBatch:
        buffer = self._free.get()
        t = time.perf_counter()
        try:
            return infer(self.predictor, self.model, batch, self.grid, buffer)
        finally:
            self._timings["infer_s"] = self._timings.get("infer_s", 0.0) + time.perf_counter() - t
            self._free.put(buffer)

    def _hand_back(self) -> None:
        future, records, n = self._pending.popleft()
        chips = list(records)
        detections: Tuple[DetectionRecord, ...] = ()
        if future is not None:
            inferred = future.result()  # an exception in a forward pass surfaces here, in order
            chips.extend(inferred.chips)
            detections = inferred.detections
        self._commit(chips, detections, n)
