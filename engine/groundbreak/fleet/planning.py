"""``fleet plan``: many AOIs × many dates → a ledger of units, with chips, km² and expected cost per AOI.

The plan is ``plan.plan_inputs`` — the same grid, chips and per-scene band mapping as
``groundbreak run`` — packed into fleet units (``work.pack_units``). Each chip of each date is
processed once however many AOIs overlap it; for cost per AOI a shared chip is charged in equal
shares to the AOIs it serves, so the AOIs' costs add up to the run's.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from ..aoi import AOI, geodesic_area_km2
from ..cost import FALLBACK_CHIPS_PER_S, remembered_throughput
from ..masks import MaskRules
from ..model import ModelPackage
from ..pipeline.options import RunOptions
from ..pipeline.provenance import run_fingerprint, short_id
from ..pipeline.units import ModelRef
from ..plan import Plan, plan_inputs
from ..reporter import Reporter
from ..scene import Scene
from .ledger import Ledger, RunSpec
from .parts import is_url
from .work import DEFAULT_UNIT_CHIPS, FleetUnit, pack_units

log = logging.getLogger(__name__)

#: Cores of the node the price is quoted for (``--price-per-hour`` is per node-hour).
DEFAULT_NODE_CORES = 2


@dataclass(frozen=True, slots=True)
class AoiPlan:
    aoi_id: str
    km2: float
    ground_chips: int  # distinct ground squares
    chip_scenes: int  # chips × the dates that cover them
    share: float  # chip_scenes with each shared chip split between the AOIs it serves
    expected_usd: float


@dataclass(frozen=True)
class FleetPlanResult:
    ledger: Path
    run_id: str
    parts: str
    units: int
    chips: int
    ground_chips: int
    aoi_km2: float
    scanned_km2: float
    scenes: int
    chips_per_s: float
    throughput_source: str
    expected_worker_seconds: float
    expected_usd: float
    aois: Tuple[AoiPlan, ...]

    def stats(self) -> Dict[str, Any]:
        return {
            "run_id": self.run_id, "units": self.units, "chips_planned": self.chips, "ground_chips": self.ground_chips,
            "aoi_km2": round(self.aoi_km2, 4), "scanned_km2": round(self.scanned_km2, 4), "scenes": self.scenes,
            "aois": len(self.aois), "chips_per_s": self.chips_per_s, "throughput_source": self.throughput_source,
            "expected_worker_seconds": round(self.expected_worker_seconds, 1),
            "expected_usd": round(self.expected_usd, 6),
        }


def plan_fleet(
    aois: Sequence[Union[str, AOI]],
    scenes: Sequence[Union[str, Scene]],
    model: ModelPackage,
    ledger: "str | os.PathLike[str]",
    *,
    options: Optional[RunOptions] = None,
    parts: Optional[str] = None,
    unit_chips: int = DEFAULT_UNIT_CHIPS,
    node_cores: int = DEFAULT_NODE_CORES,
    aoi_id_field: Optional[str] = None,
    band_order: Optional[Sequence[str]] = None,
    date: Optional[str] = None,
    grid_epsg: Optional[int] = None,
    mask_rules: Optional[MaskRules] = None,
    allow_resample: bool = False,
    overwrite: bool = False,
    reporter: Optional[Reporter] = None,
    command: str = "",
) -> FleetPlanResult:
    """Plan a fleet run into a new ledger (``parts``: where workers write, default beside the ledger)."""
    options = options or RunOptions()
    options.validate()
    ledger_path = Path(ledger).expanduser().resolve()
    plan = plan_inputs(aois, scenes, model, aoi_id_field=aoi_id_field, band_order=band_order, date=date,
                       grid_epsg=grid_epsg, mask_rules=mask_rules, allow_resample=allow_resample, reporter=reporter)
    units = pack_units(plan, unit_chips)
    return write_plan(plan, model, units, ledger_path, options=options, parts=parts, unit_chips=unit_chips,
                      node_cores=node_cores, overwrite=overwrite, command=command)


def write_plan(plan: Plan, model: ModelPackage, units: Sequence[FleetUnit], ledger_path: Path, *,
               options: RunOptions, parts: Optional[str], unit_chips: int, node_cores: int, overwrite: bool,
               command: str = "") -> FleetPlanResult:
    """The ledger for a plan already made (``plan_fleet`` and the planning benchmark use it)."""
    if node_cores < 1:
        raise ValueError("node_cores must be at least 1")
    fingerprint = run_fingerprint(plan, model, options)
    location = parts or str(ledger_path.with_name(ledger_path.stem + ".parts"))
    if not is_url(location):
        location = str(Path(location).expanduser().resolve())
    spec = RunSpec(
        run_id=short_id(fingerprint), fingerprint=fingerprint, model=ModelRef.of(model), model_id=model.model_id,
        model_demo=model.demo, grid=plan.grid, rule=options.drop_rule, runtime=options.runtime,
        batch_size=options.batch_size, threads=options.threads, readers=options.readers,
        force_runtime=options.force_runtime, price_per_hour=options.price_per_hour, node_cores=node_cores,
        parts=location, unit_chips=unit_chips,
    )
    measured = remembered_throughput(model.sha256, options.threads)
    rate = measured or FALLBACK_CHIPS_PER_S
    usd_per_chip = usd_per_worker_second(spec) / rate
    stats = aoi_statistics(plan, usd_per_chip)
    chips = plan.chips_planned
    source = "measured on this machine" if measured else "default guess"
    info: Dict[str, Any] = {"aoi_km2": plan.aoi_km2, "scanned_km2": plan.scanned_km2, "ground_chips": plan.ground_chips,
            "chips_planned": chips, "command": command, "chips_per_s": rate,
            "throughput_source": source, "skipped_scenes": list(plan.skipped_scenes)}
    Ledger.create(ledger_path, spec=spec, plan=plan, units=units, aoi_stats=[_stat_doc(s) for s in stats],
                  info=info, overwrite=overwrite).close()
    return FleetPlanResult(
        ledger=ledger_path, run_id=spec.run_id, parts=location, units=len(units), chips=chips,
        ground_chips=plan.ground_chips, aoi_km2=plan.aoi_km2, scanned_km2=plan.scanned_km2, scenes=len(plan.scenes),
        chips_per_s=round(rate, 2), throughput_source=source,
        expected_worker_seconds=chips / rate, expected_usd=chips * usd_per_chip, aois=tuple(stats),
    )


def usd_per_worker_second(spec: RunSpec) -> float:
    """What one second of one worker costs: its share of a node-hour (its cores over the node's)."""
    return spec.price_per_hour / 3600.0 * min(1.0, spec.threads / spec.node_cores)


def aoi_statistics(plan: Plan, usd_per_chip: float) -> List[AoiPlan]:
    """Chips, dates and (expected) cost of every AOI; a chip shared by n AOIs counts 1/n to each share."""
    chip_scenes: Dict[str, int] = defaultdict(int)
    share: Dict[str, float] = defaultdict(float)
    cells: Set[Tuple[int, int, str]] = set()
    for unit in plan.units:
        for ref in unit.chips:
            n = len(ref.aoi_ids)
            for aoi_id in ref.aoi_ids:
                chip_scenes[aoi_id] += 1
                share[aoi_id] += 1.0 / n
                cells.add((ref.col, ref.row, aoi_id))
    ground: Dict[str, int] = defaultdict(int)
    for _, _, aoi_id in cells:
        ground[aoi_id] += 1
    return [AoiPlan(aoi_id=a.aoi_id, km2=geodesic_area_km2(a.geometry), ground_chips=ground[a.aoi_id],
                    chip_scenes=chip_scenes[a.aoi_id], share=share[a.aoi_id],
                    expected_usd=share[a.aoi_id] * usd_per_chip) for a in plan.aois]


def _stat_doc(s: AoiPlan) -> Dict[str, Any]:
    return {"aoi_id": s.aoi_id, "km2": s.km2, "ground_chips": s.ground_chips, "chip_scenes": s.chip_scenes,
            "share": s.share}
