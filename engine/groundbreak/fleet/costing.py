"""Cost per AOI, per km² and km² per CPU-hour, and the shared queue against one instance per AOI.

The shared queue's cost follows chip count: an AOI pays its share of the chips processed (a chip
shared by n AOIs costs each 1/n) at the measured cost per chip — what the fleet's workers were
billed while the runner ran, divided by the chips they processed (idle and scheduling included), or
the plan's expected cost per chip before anything ran. The per-AOI-instance design starts one
machine per AOI: each pays its start-up (boot, image pull, model load) and at least the provider's
minimum billing, and processes all of its own chips, shared or not, at one node's throughput.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

from .ledger import Ledger
from .planning import usd_per_worker_second


@dataclass(frozen=True, slots=True)
class InstanceModel:
    """One cloud instance per AOI (the design the shared queue replaces)."""

    startup_s: float = 180.0  # boot, pull the image, load the model: billed, no chips done
    min_billing_s: float = 60.0  # per-second billing with a one-minute minimum (hourly billing: 3600)
    billing_increment_s: float = 1.0  # per-second billing (hourly billing: 3600)

    def billed_seconds(self, busy_s: float) -> float:
        seconds = self.startup_s + busy_s
        return max(self.min_billing_s, math.ceil(seconds / self.billing_increment_s - 1e-9) * self.billing_increment_s)


@dataclass(frozen=True, slots=True)
class AoiCost:
    aoi_id: str
    km2: float
    chip_scenes: int
    share: float
    shared_usd: float  # its share of the shared queue
    instance_usd: float  # its own instance


@dataclass(frozen=True)
class CostReport:
    measured: bool  # False: from the plan's expected throughput
    chips: int
    usd_per_chip: float
    total_usd: float
    scanned_km2: float
    aoi_km2: float
    per_km2_usd: Optional[float]  # per km² scanned (km² × dates)
    cpu_hours: float
    km2_per_cpu_hour: Optional[float]
    node_chips_per_s: float
    price_per_hour: float
    instance: InstanceModel
    instance_total_usd: float
    aois: Sequence[AoiCost]

    @property
    def instance_ratio(self) -> Optional[float]:
        return self.instance_total_usd / self.total_usd if self.total_usd > 0 else None

    def to_dict(self, *, per_aoi: bool = True) -> Dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "aois"}
        out["instance_ratio"] = self.instance_ratio
        if per_aoi:
            out["aois"] = [asdict(a) for a in self.aois]
        return out


def compare(aois: Sequence[Dict[str, Any]], *, usd_per_chip: float, node_chips_per_s: float, price_per_hour: float,
            instance: InstanceModel) -> List[AoiCost]:
    """Per-AOI cost in both designs (``aois``: aoi_id, km2, chip_scenes, share)."""
    out = []
    for a in aois:
        busy = a["chip_scenes"] / node_chips_per_s if node_chips_per_s > 0 else 0.0
        out.append(AoiCost(aoi_id=a["aoi_id"], km2=a["km2"], chip_scenes=int(a["chip_scenes"]), share=a["share"],
                           shared_usd=a["share"] * usd_per_chip,
                           instance_usd=instance.billed_seconds(busy) / 3600.0 * price_per_hour))
    return out


def cost_report(ledger: Ledger, *, instance: Optional[InstanceModel] = None) -> CostReport:
    """The run's cost from its ledger: measured once units are done, else expected from the plan."""
    instance = instance or InstanceModel()
    spec = ledger.spec
    info = ledger.info()
    totals = ledger.totals()
    chips_done = int(totals["chips"])
    per_worker_s = usd_per_worker_second(spec)
    workers_per_node = max(1.0, spec.node_cores / spec.threads)
    measured = chips_done > 0 and totals["seconds"] > 0
    if measured:
        billed = _billed_worker_seconds(ledger) or totals["seconds"]
        usd_per_chip = billed * per_worker_s / chips_done
        node_rate = chips_done / totals["seconds"] * workers_per_node
    else:
        rate = float(info.get("chips_per_s") or 1.0)
        usd_per_chip = per_worker_s / rate
        node_rate = rate * workers_per_node
    aoi_rows = ledger.aoi_rows()
    per_aoi = compare(aoi_rows, usd_per_chip=usd_per_chip, node_chips_per_s=node_rate,
                      price_per_hour=spec.price_per_hour, instance=instance)
    chips = int(info["chips_planned"])
    total = chips * usd_per_chip
    scanned = float(info["scanned_km2"])
    # CPU-hours of the whole queue at the measured rate: cores held by workers while busy.
    cpu_hours = chips / (node_rate / spec.node_cores) / 3600.0 if node_rate > 0 else 0.0
    return CostReport(
        measured=measured, chips=chips, usd_per_chip=usd_per_chip, total_usd=total, scanned_km2=scanned,
        aoi_km2=float(info["aoi_km2"]), per_km2_usd=total / scanned if scanned > 0 else None, cpu_hours=cpu_hours,
        km2_per_cpu_hour=scanned / cpu_hours if cpu_hours > 0 else None, node_chips_per_s=node_rate,
        price_per_hour=spec.price_per_hour, instance=instance,
        instance_total_usd=sum(a.instance_usd for a in per_aoi), aois=per_aoi,
    )


def _billed_worker_seconds(ledger: Ledger) -> float:
    """Worker-seconds the fleet was up while runners ran (wall × workers), idle time included."""
    total = 0.0
    for attempt in ledger.runner_attempts():
        if attempt["finished"] is None or not attempt["chips"]:
            continue  # a crashed attempt's wall time is unknown; its units count at their busy time
        total += (attempt["finished"] - attempt["started"]) * attempt["workers"]
    busy_in_counted = sum(a["busy_seconds"] for a in ledger.runner_attempts()
                          if a["finished"] is not None and a["chips"])
    return total + max(0.0, ledger.totals()["seconds"] - busy_in_counted)
