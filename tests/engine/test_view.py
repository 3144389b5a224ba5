"""Scenes seen through the chip grid: exact pixel classes, the cheap prefilter, alpha masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import ORIGIN, write_scene
from rasterio.enums import ColorInterp as CI
from rasterio.transform import from_origin

from groundbreak.grid import ChipGrid
from groundbreak.masks import CLOUD, NODATA, SHADOW, VALID, DropRule, class_fractions
from groundbreak.pipeline import screen
from groundbreak.plan import ChipRef, WorkUnit
from groundbreak.scene import open_scene, select_bands
from groundbreak.view import SceneView

GRID = ChipGrid(epsg=32614, chip_px=256, gsd=2.0)
C0, R1 = int(ORIGIN[0] // 512), int(ORIGIN[1] // 512)
RGBN = ("red", "green", "blue", "nir")


def _view(path) -> SceneView:
    scene = open_scene(path)
    return SceneView(scene, GRID, select_bands(scene, RGBN))


def _cell(i: int, j: int):
    """Chip i columns east and j rows south of the scenes' top-left chip."""
    return (C0 + i, R1 - 1 - j)


def test_exact_classes_nodata_cloud_shadow_and_outside(tmp_path):
    # 768 × 640 px = 3 × 2.5 chips: the bottom chip row is half outside the raster.
    path = write_scene(tmp_path / "s_20240501.tif", nodata_cols=100, cloud_box=(0, 128, 256, 512),
                       shadow_box=(256, 320, 512, 768))
    view = _view(path)
    try:
        assert view.aligned
        f = {(i, j): class_fractions(view.read_chip(*_cell(i, j)).classes) for i in range(3) for j in range(3)}
    finally:
        view.close()
    np.testing.assert_allclose(f[0, 0], [1 - 100 / 256, 100 / 256, 0, 0])
    np.testing.assert_allclose(f[1, 0], [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(f[2, 1], [0.75, 0, 0, 0.25])
    np.testing.assert_allclose(f[2, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(f[1, 2], [0.5, 0.5, 0, 0])  # half below the raster's last row
    np.testing.assert_allclose(f[0, 2], [0.5 * (1 - 100 / 256), 1 - 0.5 * (1 - 100 / 256), 0, 0])


def test_chip_data_is_the_scene_pixels_in_model_band_order(tmp_path):
    path = write_scene(tmp_path / "s_20240501.tif", descriptions=("nir", "red", "green", "blue"))
    view = _view(path)
    try:
        assert view.band_indexes == (2, 3, 4, 1)
        chip = view.read_chip(*_cell(1, 1))
    finally:
        view.close()
    with rasterio.open(path) as src:
        expected = src.read(window=rasterio.windows.Window(256, 256, 256, 256))
    np.testing.assert_array_equal(chip.data, expected[[1, 2, 3, 0]])
    assert chip.data.dtype == np.uint16 and chip.data.shape == (4, 256, 256)


def test_prefilter_matches_exact_on_block_aligned_masks(tmp_path):
    # Boxes on multiples of 32 px: the 1/8 decimated mask sees them exactly.
    path = write_scene(tmp_path / "s_20240501.tif", nodata_cols=64, cloud_box=(0, 96, 256, 512),
                       shadow_box=(288, 512, 512, 768))
    view = _view(path)
    cells = [_cell(i, j) for i in range(3) for j in range(3)]
    try:
        est = view.prefilter(cells)
        exact = np.array([class_fractions(view.read_chip(c, r).classes) for c, r in cells])
    finally:
        view.close()
    # The prefilter does not read data bands (no overviews), so the nodata edge *inside* the raster
    # is invisible to it: only coverage, cloud and shadow are compared.
    no_edge = [k for k, (c, _) in enumerate(cells) if c != C0]
    np.testing.assert_allclose(est[no_edge], exact[no_edge])
    assert est[cells.index(_cell(0, 2)), NODATA] == pytest.approx(0.5)  # coverage is geometric


def _random_mask(rng: np.random.Generator, shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(3, 60))):
        h, w = rng.integers(2, 300, 2)
        r, c = rng.integers(-100, shape[0], 2)
        mask[max(r, 0):r + h, max(c, 0):c + w] = rng.choice([1, 2, 255])
    if rng.random() < 0.5:  # speckle: single cloudy pixels
        mask[rng.random(shape) < rng.uniform(0, 0.5)] = 1
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_prefilter_never_drops_a_usable_chip(tmp_path, seed):
    """Property over random masks: a chip whose exact valid fraction reaches --min-valid is never
    dropped by the decimated-mask screen."""
    rng = np.random.default_rng(seed)
    path = write_scene(tmp_path / "s_20240501.tif", size=(1024, 1024), nodata=None, seed=seed)
    mask = _random_mask(rng, (1024, 1024))
    with rasterio.open(path) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
    with rasterio.open(tmp_path / "s_20240501_mask.tif", "w", **profile) as dst:
        dst.write(mask[None])
    scene = open_scene(path)
    assert len(scene.mask_sources) == 1
    view = SceneView(scene, GRID, (1, 2, 3, 4))
    refs = [ChipRef(c, r, GRID.chip_id(c, r), ("a",)) for c, r in (_cell(i, j) for i in range(4) for j in range(4))]
    unit = WorkUnit("u", 0, (0, 0), tuple(refs))
    try:
        exact = {r.chip_id: class_fractions(view.read_chip(r.col, r.row).classes)[VALID] for r in refs}
        for min_valid in (0.2, 0.5, 0.8, 1.0):
            dropped, keep = screen(view, refs, scene=scene, grid=GRID, rule=DropRule(min_valid, 0.15),
                                   unit_id=unit.unit_id)
            assert len(dropped) + len(keep) == len(refs)
            for rec in dropped:
                assert exact[rec.chip_id] < min_valid, (rec.chip_id, exact[rec.chip_id], rec.valid_fraction)
                assert rec.screened_by == "prefilter"
    finally:
        view.close()
    # The generator must produce chips on both sides of the thresholds for the property to bite.
    values = np.array(list(exact.values()))
    assert values.min() < 0.9


# -- alpha is a mask, never a data band ---------------------------------------------------------
def _rgbn_alpha(path: Path, *, alpha_by: str) -> Path:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 255, size=(5, 512, 512)).astype("uint8")
    data[4] = 255
    data[4, :, :128] = 0  # the left quarter is transparent
    data[4, 400:, :] = 0  # and the bottom rows
    profile = dict(driver="GTiff", width=512, height=512, count=5, dtype="uint8", crs="EPSG:32614",
                   transform=from_origin(*ORIGIN, 2.0, 2.0), photometric="RGB", tiled=True, blockxsize=256,
                   blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        if alpha_by == "colorinterp":
            dst.colorinterp = [CI.red, CI.green, CI.blue, CI.undefined, CI.alpha]
        dst.write(data)
        for i, name in enumerate(RGBN + (("alpha",) if alpha_by == "description" else ("",)), start=1):
            if name:
                dst.set_band_description(i, name)
    return path


@pytest.mark.parametrize("alpha_by", ["colorinterp", "description"])
def test_rgbn_alpha_scene_uses_alpha_as_mask(tmp_path, alpha_by):
    # Regression: GDAL's dataset mask ignores the alpha of a 5-band file, so transparent pixels
    # used to count as valid.
    view = _view(_rgbn_alpha(tmp_path / "x_20240501.tif", alpha_by=alpha_by))
    try:
        assert view.scene.alpha_band == 5
        assert view.band_indexes == (1, 2, 3, 4)
        top_left = class_fractions(view.read_chip(*_cell(0, 0)).classes)
        bottom_right = class_fractions(view.read_chip(*_cell(1, 1)).classes)
    finally:
        view.close()
    np.testing.assert_allclose(top_left, [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(bottom_right, [144 / 256, 112 / 256, 0, 0])


def test_warped_scene_without_nodata_marks_outside_pixels(tmp_path):
    # Off-grid by 1 m, no nodata value: only the warped view's added alpha tells "outside" apart.
    path = write_scene(tmp_path / "s_20240501.tif", size=(512, 512), origin=(ORIGIN[0] + 1, ORIGIN[1] - 1), nodata=None)
    view = _view(path)
    try:
        assert not view.aligned
        inner = class_fractions(view.read_chip(*_cell(0, 0)).classes)
        beyond = class_fractions(view.read_chip(*_cell(1, 2)).classes)
    finally:
        view.close()
    assert inner[VALID] > 0.98
    assert beyond[NODATA] > 0.99  # the chip below the raster holds nothing
    assert CLOUD == 2 and SHADOW == 3  # class codes are part of the contract with the chips table


def test_prefilter_sees_the_edge_of_a_warped_scene(tmp_path):
    # Regression: the warped view is snapped outward to whole chips, and the prefilter took its
    # extent for the scene's, so chips beyond a warped scene's edge looked fully valid (every NAIP
    # scene for a 2 m model is warped): `plan` missed those drops and the run read them in full.
    path = write_scene(tmp_path / "s_20240501.tif", size=(512, 640), origin=(ORIGIN[0] + 1, ORIGIN[1] - 1))
    view = _view(path)
    cells = [_cell(i, j) for i in range(3) for j in range(4)]
    try:
        assert not view.aligned
        est = view.prefilter(cells)[:, VALID]
        exact = np.array([class_fractions(view.read_chip(c, r).classes)[VALID] for c, r in cells])
    finally:
        view.close()
    np.testing.assert_allclose(est, exact, atol=0.02)
    assert est[cells.index(_cell(0, 2))] == pytest.approx(0.5, abs=0.02)
    assert est[cells.index(_cell(0, 3))] == 0 and est[cells.index(_cell(2, 0))] == 0


def test_prefilter_uses_the_data_mask_when_overviews_make_it_cheap(tmp_path):
    path = write_scene(tmp_path / "s_20240501.tif", size=(768, 512), nodata_cols=128)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], rasterio.enums.Resampling.nearest)
    view = _view(path)
    try:
        est = view.prefilter([_cell(0, 0), _cell(1, 0)])
    finally:
        view.close()
    np.testing.assert_allclose(est[:, NODATA], [0.5, 0.0], atol=1 / 32)
