"""Names that cross the process boundary: what the engine writes and its clients read.

Chip statuses, drop reasons, inference runtimes, the ``result`` statistics and ``progress`` counts a
client may read, and the properties of a streamed detection feature. They are defined here once; the
engine imports them, and the QGIS plugin carries a byte-identical copy (``plugin/names.py``, proved
identical by a test) because the plugin imports only the standard library, ``qgis.*`` and these
stdlib-only modules. Standard library only.
"""

from __future__ import annotations

from enum import Enum
from typing import Tuple


class ChipStatus(str, Enum):
    """What became of one planned chip of one scene (the ``chips`` layer's ``status``)."""

    INFERRED = "inferred"
    DROPPED_NODATA = "dropped-nodata"
    DROPPED_CLOUD = "dropped-cloud"
    DROPPED_SHADOW = "dropped-shadow"
    FAILED = "failed"

    @property
    def dropped(self) -> bool:
        return self.value.startswith("dropped-")

    @property
    def count_key(self) -> str:
        """The key of this status in ``progress`` counts (``dropped-cloud`` -> ``dropped_cloud``)."""
        return self.value.replace("-", "_")


#: Why a chip is dropped before inference, in the order of the pixel classes 1, 2, 3 (masks.py).
DROP_REASONS: Tuple[str, ...] = ("nodata", "cloud", "shadow")


def drop_status(reason: str) -> ChipStatus:
    """``"cloud"`` -> ``ChipStatus.DROPPED_CLOUD``."""
    return ChipStatus("dropped-" + reason)


#: Every chip status, in display order.
CHIP_STATUSES: Tuple[str, ...] = tuple(s.value for s in ChipStatus)

#: Keys of a ``progress`` event's ``counts`` during a run.
PROGRESS_COUNTS: Tuple[str, ...] = (
    "planned", "resumed", "dropped_nodata", "dropped_cloud", "dropped_shadow", "inferred", "failed", "detections",
)


#: Inference runtimes a model package can run on (``auto`` picks one of them).
RUNTIMES: Tuple[str, ...] = ("eager", "torchscript", "torch-int8", "openvino", "openvino-bf16", "openvino-int8")
AUTO = "auto"
#: What ``--runtime`` accepts and the plugin offers.
RUNTIME_CHOICES: Tuple[str, ...] = (AUTO,) + RUNTIMES


def is_int8(runtime: str) -> bool:
    return runtime.endswith("int8")


#: Statistics of a run's ``result`` event (and its ``runs`` row) that clients read. The chip and
#: detection figures (``chips_dropped``, ``chips_inferred``, ``chips_failed``, ``detections``) are the
#: output's totals over every attempt, so they agree with the GeoPackage; ``chips_resumed`` is what
#: earlier attempts had decided and ``chips_processed`` what this attempt decided (the ``progress``
#: counts are this attempt's too).
RUN_STATS: Tuple[str, ...] = (
    "run_id", "attempt", "status", "aoi_km2", "scanned_km2", "scenes", "ground_chips", "chips_planned",
    "chips_resumed", "chips_processed", "chips_dropped", "chips_inferred", "chips_failed", "detections",
    "seconds", "cpu_seconds", "chips_per_s", "inferred_per_s", "km2_per_h", "peak_rss_mb", "runtime",
    "batch_size", "forward_batch", "threads", "readers", "model_id", "model_demo", "timings", "resampled",
    "timeline",
)

#: Statistics of a ``plan`` result that clients read.
PLAN_STATS: Tuple[str, ...] = (
    "aoi_km2", "scanned_km2", "scenes", "ground_chips", "chips_planned", "expected_dropped",
    "chips_expected_inferred", "chips_per_s", "throughput_source", "expected_seconds", "units", "grid_epsg",
    "chip_size_m", "model_id", "model_demo",
)

#: Properties of a detection feature in a ``features`` event (and fields of the ``detections`` layer).
DETECTION_PROPERTIES: Tuple[str, ...] = (
    "chip_id", "aoi_id", "scene_id", "date", "score", "label", "model_id", "run_id",
)


# ---- the timeline's output (written by groundbreak.timeline, read by the plugin's Sites tab)
SITES_LAYER = "sites"
OBSERVATIONS_LAYER = "site_observations"
SITE_ID = "site_id"
START_DATE = "start_date"
END_DATE = "end_date"  # NULL while the site is ongoing (else the first date seen inactive again)
START_YEAR = "start_year"
ONGOING = "ongoing"  # 1 while active at the last processed date
DATE = "date"
SCORE = "score"  # NULL when the date is unknown
STATUS = "status"


class SiteStatus(str, Enum):
    """A site's state on one date (``site_observations.status``) when the model has no phases."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"
