"""What a run will cost before it runs: expected drops from the masks, time and money."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict

from .cost import (
    FALLBACK_CHIPS_PER_S,
    FALLBACK_MODEL_LOAD_IR_S,
    FALLBACK_MODEL_LOAD_S,
    Cost,
    cost_of,
    remembered_model_load,
    remembered_throughput,
)
from .errors import ReadError
from .masks import DropRule, Screening
from .model import ModelPackage
from .names import DROP_REASONS
from .plan import Plan, fitted
from .view import SceneView


@dataclass(frozen=True, slots=True)
class Estimate:
    aoi_km2: float
    scanned_km2: float
    scenes: int
    ground_chips: int
    chips_planned: int
    expected_dropped: Dict[str, int]
    chips_expected_inferred: int
    chips_per_s: float
    throughput_source: str  # "measured on this machine" | "default guess"
    expected_seconds: float
    cost: Cost
    units: int
    grid_epsg: int
    chip_size_m: float

    def stats(self) -> Dict[str, object]:
        out = asdict(self)
        out.pop("cost")
        return out


def estimate(plan: Plan, model: ModelPackage, *, min_valid: float, threads: int, price_per_hour: float,
             margin: float = DropRule().prefilter_margin) -> Estimate:
    """Screen every unit with the cheap decimated masks (no pixel data is read)."""
    plan = fitted(plan, model)
    rule = DropRule(min_valid, margin)
    dropped = {reason: 0 for reason in DROP_REASONS}
    views: Dict[int, SceneView] = {}
    try:
        for unit in plan.units:
            view = views.get(unit.scene_index)
            if view is None:
                scene = plan.scenes[unit.scene_index]
                bands = plan.fits[unit.scene_index].band_indexes
                view = views[unit.scene_index] = SceneView(scene, plan.grid, bands)
            try:
                fractions = view.prefilter([(c.col, c.row) for c in unit.chips])
            except ReadError:
                continue  # a damaged mask block: the run decides those chips one by one
            for frac in fractions:
                # The plan forecasts with the threshold itself (the run decides borderline chips exactly).
                status = rule.decide(frac, Screening.ESTIMATE)
                if status is not None:
                    dropped[status.value.split("-", 1)[1]] += 1
    finally:
        for view in views.values():
            view.close()
    planned = plan.chips_planned
    inferred = planned - sum(dropped.values())
    measured = remembered_throughput(model.sha256, threads)
    rate = measured or FALLBACK_CHIPS_PER_S
    load = remembered_model_load(model.sha256, threads) or (
        FALLBACK_MODEL_LOAD_IR_S if model.artifacts else FALLBACK_MODEL_LOAD_S)
    # Calibrated by the last run on this machine: its end-to-end rate over inferred chips (reads and
    # screening included) and its start-up plus model-load time; drops cost a decimated-mask look each.
    seconds = load + inferred / rate + 0.002 * (planned - inferred)
    return Estimate(
        aoi_km2=round(plan.aoi_km2, 4),
        scanned_km2=round(plan.scanned_km2, 4),
        scenes=len(plan.scenes),
        ground_chips=plan.ground_chips,
        chips_planned=planned,
        expected_dropped=dropped,
        chips_expected_inferred=inferred,
        chips_per_s=round(rate, 1),
        throughput_source="measured on this machine" if measured else "default guess",
        expected_seconds=round(seconds, 1),
        cost=cost_of(seconds, price_per_hour=price_per_hour, km2=plan.scanned_km2, chips=planned),
        units=len(plan.units),
        grid_epsg=plan.grid.epsg,
        chip_size_m=plan.grid.size_m,
    )
