"""Runs on real files from ../shared/data (GROUNDBREAK_REAL_DATA); skipped when it is unset."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from conftest import real_data, write_aoi
from rasterio.warp import transform_bounds
from shapely.geometry import box

from groundbreak.cli import cli

DATA = real_data()
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(DATA is None, reason="GROUNDBREAK_REAL_DATA is not set (path to ../shared/data)")]


def _aoi_inside(folder: Path, paths, *, keep: float = 0.5, name: str = "aoi.geojson") -> Path:
    """A lon/lat box covering the central ``keep`` fraction of the scenes' common footprint."""
    boxes = []
    for p in paths:
        with rasterio.open(p) as src:
            boxes.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    w, s = max(b[0] for b in boxes), max(b[1] for b in boxes)
    e, n = min(b[2] for b in boxes), min(b[3] for b in boxes)
    dx, dy = (e - w) * (1 - keep) / 2, (n - s) * (1 - keep) / 2
    return write_aoi(folder / name, [box(w + dx, s + dy, e - dx, n - dy)], crs="EPSG:4326", ids=["real"])


def _run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _chips(path: Path):
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.execute("SELECT scene_id, chip_id, status, valid_fraction FROM chips"))
    finally:
        conn.close()


@pytest.mark.slow
def test_naip_series_has_the_same_chip_ids_on_every_date(tmp_path, tiny_model):
    scenes = sorted((DATA / "naip").glob("*.tif"))
    assert len(scenes) == 5
    aoi = _aoi_inside(tmp_path, scenes, keep=0.5)
    out = tmp_path / "naip.gpkg"
    refused = _run(["run", "--aoi", aoi, "--scenes", *scenes, "--model", tiny_model, "--out", out,
                    "--runtime", "eager"])
    # 5 m imagery for a 2 m model is 2.5x coarser: refused unless resampling is asked for, naming both.
    assert refused.exit_code == 1 and not out.exists(), refused.stderr
    assert "5.00 m pixels" in refused.stderr and "2.00 m" in refused.stderr and "--allow-resample" in refused.stderr
    result = _run(["run", "--aoi", aoi, "--scenes", *scenes, "--model", tiny_model, "--out", out,
                   "--runtime", "eager", "--allow-resample"])
    assert result.exit_code == 0, result.stderr
    assert "resampled to the model's 2.00 m chip grid" in result.stderr
    rows = _chips(out)
    by_scene = {}
    for scene_id, chip_id, status, valid in rows:
        by_scene.setdefault(scene_id, set()).add(chip_id)
        assert status == "inferred" and valid == pytest.approx(1.0), (scene_id, chip_id, status, valid)
    assert len(by_scene) == 5
    ids = list(by_scene.values())
    assert all(i == ids[0] for i in ids) and len(ids[0]) >= 4
    assert all(c.startswith("32614_512_") for c in ids[0])


@pytest.mark.parametrize("name", ["RGB.byte.tif", "RE3_visual_clip.tif"])
def test_three_band_and_rgb_alpha_files_are_band_mismatches(tmp_path, tiny_model, name):
    path = DATA / "edge" / name
    aoi = _aoi_inside(tmp_path, [path], keep=0.2)
    result = _run(["run", "--aoi", aoi, "--scenes", path, "--date", "2020-01-01", "--model", tiny_model,
                   "--out", tmp_path / "out.gpkg", "--runtime", "eager"])
    assert result.exit_code == 1, result.stderr
    assert "Error: " in result.stderr and "Hint: " in result.stderr
    assert "nir" in result.stderr
    if name.startswith("RE3"):
        assert "4=alpha" in result.stderr  # alpha is listed as alpha, never taken for NIR
    assert not (tmp_path / "out.gpkg").exists()


@pytest.mark.slow
def test_overlapping_rgbn_scenes_with_nodata(tmp_path, tiny_model):
    # The files carry no date: dated names (symlinks, not copies) supply one.
    links = []
    for name, day in (("rgbn_suba", "20200101"), ("rgbn_subb", "20200102")):
        link = tmp_path / ("%s_%s.tif" % (name, day))
        os.symlink(DATA / "edge" / ("%s.tif" % name), link)
        links.append(link)
    with rasterio.open(links[0]) as a, rasterio.open(links[1]) as b:
        union = [transform_bounds(s.crs, "EPSG:4326", *s.bounds) for s in (a, b)]
    aoi = write_aoi(tmp_path / "aoi.geojson", [box(min(u[0] for u in union), min(u[1] for u in union),
                                                   max(u[2] for u in union), max(u[3] for u in union))],
                    crs="EPSG:4326", ids=["haiti"])
    out = tmp_path / "out.gpkg"
    result = _run(["run", "--aoi", aoi, "--scenes", *links, "--model", tiny_model, "--out", out,
                   "--runtime", "eager", "--events", "jsonl", "--allow-resample"])
    assert result.exit_code == 0, result.stderr
    from groundbreak.protocol import parse_line

    stats = [parse_line(x) for x in result.stdout.splitlines() if x.strip()][-2].get("stats")
    assert stats["chips_dropped"]["nodata"] >= 1
    decided = sum(stats["chips_dropped"].values()) + stats["chips_inferred"] + stats["chips_failed"]
    assert stats["chips_planned"] == decided
    rows = _chips(out)
    assert len(rows) == stats["chips_planned"]
    ids = {}
    for scene_id, chip_id, status, valid in rows:
        ids.setdefault(scene_id, set()).add(chip_id)
        if status == "dropped-nodata":
            assert valid < 0.5
        if status == "inferred":
            assert valid >= 0.5
    assert len(ids) == 2 and ids["rgbn_suba_20200101"] & ids["rgbn_subb_20200102"]  # the overlap, same ids
    assert all(c.startswith("32618_512_") for c in ids["rgbn_suba_20200101"])
