"""Cost of a run: the mission's first-class output.

Cost follows compute time, and compute time follows chip count. The price is per node-hour of the
machine the engine runs on; the default is an *example* price for a 2-vCPU cloud CPU node, not a
quote: pass your own with ``--price-per-hour``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

from .cache import cache_dir

log = logging.getLogger(__name__)

#: Example on-demand price (USD per node-hour) of a 2-vCPU x86 cloud CPU node in 2026.
DEFAULT_PRICE_PER_HOUR = 0.10

#: Used by ``plan`` before this machine has measured the model (chips inferred per second, and
#: seconds to load the model: a first OpenVINO conversion on a 2-core machine).
FALLBACK_CHIPS_PER_S = 60.0
FALLBACK_MODEL_LOAD_S = 9.0
#: ... and for a package that carries its OpenVINO IR (compiled from disk, no torch: 0.4-0.8 s of
#: start-up and load measured on the default model, 2026-12-02).
FALLBACK_MODEL_LOAD_IR_S = 1.0


@dataclass(frozen=True, slots=True)
class Cost:
    price_per_hour: float
    seconds: float
    run_usd: float
    per_km2_usd: Optional[float]
    per_1000_chips_usd: Optional[float]

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def cost_of(seconds: float, *, price_per_hour: float, km2: float, chips: int) -> Cost:
    run_usd = seconds / 3600.0 * price_per_hour
    return Cost(
        price_per_hour=price_per_hour,
        seconds=seconds,
        run_usd=run_usd,
        per_km2_usd=(run_usd / km2) if km2 > 0 else None,
        per_1000_chips_usd=(run_usd / chips * 1000.0) if chips > 0 else None,
    )


def _cache_file() -> Path:
    return cache_dir("throughput") / "throughput.json"


def remembered_throughput(model_sha: str, threads: int) -> Optional[float]:
    """Inferred chips/s (end to end, reads included) this machine last measured for this model and
    thread count (used by ``plan``)."""
    return _remembered("%s:%d" % (model_sha, threads))


def remembered_model_load(model_sha: str, threads: int) -> Optional[float]:
    """Seconds this machine last took from process start to this model being ready (used by ``plan``)."""
    return _remembered("%s:%d:load" % (model_sha, threads))


def _remembered(key: str) -> Optional[float]:
    try:
        return float(json.loads(_cache_file().read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_throughput(model_sha: str, threads: int, chips_per_s: float, *,
                        model_load_s: Optional[float] = None) -> None:
    path = _cache_file()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data["%s:%d" % (model_sha, threads)] = round(chips_per_s, 2)
    if model_load_s is not None:
        data["%s:%d:load" % (model_sha, threads)] = round(model_load_s, 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not fail a run
        log.debug("cannot remember throughput: %s", exc)
