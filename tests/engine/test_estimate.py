"""``plan`` estimates: expected drops from decimated masks, time from this machine's measured throughput."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

from groundbreak.aoi import read_aois
from groundbreak.cost import FALLBACK_CHIPS_PER_S, remember_throughput
from groundbreak.estimate import estimate
from groundbreak.grid import grid_for
from groundbreak.model import load_model_package
from groundbreak.plan import make_plan
from groundbreak.scene import discover_scenes

X0, Y1 = ORIGIN


@pytest.fixture
def setup(tmp_path, tiny_model):
    # 4 × 3 chips, masks on the 1/8 decimation's 32 px blocks: chip (1,0) cloud, (3,1) shadow,
    # (0,2) half cloud (kept at --min-valid 0.5).
    path = write_scene(tmp_path / "s_20240501.tif", size=(1024, 768))
    mask = np.zeros((768, 1024), np.uint8)
    mask[0:256, 256:512] = 1
    mask[256:512, 768:1024] = 2
    mask[512:640, 0:256] = 1
    with rasterio.open(path) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
    with rasterio.open(tmp_path / "s_20240501_mask.tif", "w", **profile) as dst:
        dst.write(mask[None])
    model = load_model_package(tiny_model)
    aois, _ = read_aois([str(write_aoi(tmp_path / "aoi.geojson", [box(X0 + 10, Y1 - 1526, X0 + 2038, Y1 - 10)]))])
    scenes = discover_scenes([str(path)])
    plan = make_plan(aois, scenes, grid_for([a.geometry for a in aois], chip_px=256, gsd=2.0))
    return plan, model


def test_expected_drops_and_time(setup):
    plan, model = setup
    est = estimate(plan, model, min_valid=0.5, threads=2, price_per_hour=0.5)
    assert est.chips_planned == 12 and est.ground_chips == 12 and est.scenes == 1
    assert est.expected_dropped == {"nodata": 0, "cloud": 1, "shadow": 1}
    assert est.chips_expected_inferred == 10
    assert est.throughput_source == "default guess" and est.chips_per_s == FALLBACK_CHIPS_PER_S
    assert est.cost.price_per_hour == 0.5
    assert est.cost.run_usd == pytest.approx(est.expected_seconds / 3600 * 0.5, rel=0.05)
    strict = estimate(plan, model, min_valid=0.9, threads=2, price_per_hour=0.5)
    assert strict.expected_dropped["cloud"] == 2  # the half-cloudy chip too
    stats = est.stats()
    assert "cost" not in stats and stats["grid_epsg"] == 32614 and stats["chip_size_m"] == 512.0


def test_measured_throughput_is_used(setup):
    plan, model = setup
    slow = estimate(plan, model, min_valid=0.5, threads=2, price_per_hour=0.1)
    remember_throughput(model.sha256, 2, FALLBACK_CHIPS_PER_S / 10)
    measured = estimate(plan, model, min_valid=0.5, threads=2, price_per_hour=0.1)
    assert measured.throughput_source == "measured on this machine"
    assert measured.expected_seconds > slow.expected_seconds
    assert estimate(plan, model, min_valid=0.5, threads=1, price_per_hour=0.1).throughput_source == "default guess"


def test_a_package_with_its_openvino_ir_is_not_guessed_to_load_like_a_conversion(setup):
    from dataclasses import replace

    from groundbreak.cost import FALLBACK_MODEL_LOAD_IR_S, FALLBACK_MODEL_LOAD_S

    plan, model = setup
    without = estimate(plan, model, min_valid=0.5, threads=2, price_per_hour=0.1)
    with_ir = estimate(plan, replace(model, artifacts={"openvino-int8": {"xml": "openvino-int8.xml"}}), min_valid=0.5,
                       threads=2, price_per_hour=0.1)
    assert without.expected_seconds - with_ir.expected_seconds == pytest.approx(
        FALLBACK_MODEL_LOAD_S - FALLBACK_MODEL_LOAD_IR_S, abs=0.11)
