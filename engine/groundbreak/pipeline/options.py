"""What a run is asked to do (``RunOptions``) and what it reports (``RunStats``, ``RunResult``)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..cost import DEFAULT_PRICE_PER_HOUR, Cost
from ..errors import UsageError
from ..masks import DEFAULT_MIN_VALID, DEFAULT_PREFILTER_MARGIN, DropRule
from ..names import AUTO, RUNTIME_CHOICES


class RunStatus(str, enum.Enum):
    OK = "ok"
    CANCELLED = "cancelled"
    PARTIAL = "partial"  # finished, some chips failed
    FAILED = "failed"  # stopped by an error

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "cancelled": 0, "partial": 3, "failed": 1}[self.value]


@dataclass(frozen=True, slots=True)
class RunOptions:
    min_valid: float = DEFAULT_MIN_VALID
    batch_size: int = 32  # chips per forward pass
    threads: int = 2  # inference threads
    price_per_hour: float = DEFAULT_PRICE_PER_HOUR
    runtime: Optional[str] = None  # None: the model package's choice (groundbreak:runtime)
    readers: int = 2  # reader threads (I/O stage)
    overwrite: bool = False
    prefilter_margin: float = DEFAULT_PREFILTER_MARGIN
    force_runtime: bool = False  # run a runtime the package's validation records as failed
    #: Concurrent forward passes (OpenVINO streams sharing ``threads``); None: one per thread.
    streams: Optional[int] = None

    @property
    def inference_streams(self) -> int:
        return self.streams if self.streams is not None else self.threads

    @property
    def drop_rule(self) -> DropRule:
        return DropRule(self.min_valid, self.prefilter_margin)

    def requested_runtime(self, package_runtime: str) -> str:
        return self.runtime or package_runtime or AUTO

    def validate(self) -> None:
        self.drop_rule  # noqa: B018 - validates min_valid and the margin
        if not 1 <= self.batch_size <= 1024:
            raise UsageError("--batch-size must be between 1 and 1024 (got %s)" % self.batch_size)
        if self.threads < 1:
            raise UsageError("--threads must be at least 1 (got %s)" % self.threads)
        if self.streams is not None and not 1 <= self.streams <= self.threads:
            raise UsageError("--streams must be between 1 and --threads (%d), got %s" % (self.threads, self.streams),
                             hint="each stream needs at least one of the inference threads")
        if not 1 <= self.readers <= 64:
            raise UsageError("--readers must be between 1 and 64 (got %s)" % self.readers)
        if self.price_per_hour < 0:
            raise UsageError("--price-per-hour cannot be negative")
        if self.runtime is not None and self.runtime not in RUNTIME_CHOICES:
            raise UsageError("unknown inference runtime %r" % self.runtime,
                             hint="choose one of: %s" % ", ".join(RUNTIME_CHOICES))


@dataclass(frozen=True, slots=True)
class RunStats:
    """Every figure of a run; ``to_dict`` keys are ``names.RUN_STATS`` (what clients read)."""

    run_id: str
    attempt: int
    status: str
    aoi_km2: float
    scanned_km2: float
    scenes: int
    ground_chips: int
    chips_planned: int
    chips_resumed: int
    chips_processed: int
    chips_dropped: Dict[str, int]
    chips_inferred: int
    chips_failed: int
    detections: int
    seconds: float
    cpu_seconds: float
    chips_per_s: Optional[float]
    inferred_per_s: Optional[float]
    km2_per_h: Optional[float]
    peak_rss_mb: float
    runtime: str
    batch_size: int
    forward_batch: int  # the largest forward pass actually run
    threads: int
    readers: int
    model_id: str
    model_demo: bool
    timings: Dict[str, float]
    resampled: List[Dict[str, Any]]  # scenes read at another resolution: scene_id, from_m, to_m
    #: The aggregate stage when it ran (multi-date runs): sites, dates, params; None otherwise.
    timeline: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunResult:
    output: Path
    status: RunStatus
    stats: RunStats
    cost: Cost
    failed: Tuple[Tuple[str, str, str], ...] = field(default=())  # (scene_id, chip_id, detail)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code
