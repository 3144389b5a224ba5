"""A small multi-date world for fleet tests: three dates of 2 × 2 km, overlapping and disjoint AOIs."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import List, Tuple

from conftest import ORIGIN, write_aoi, write_scene
from shapely.geometry import box

X0, Y1 = ORIGIN
DATES = ("20240501", "20240601", "20240701")


def with_threshold(package: Path, out: Path, threshold: float) -> Path:
    """A copy of a model package with another threshold, so the random model makes detections."""
    if not out.exists():
        shutil.copytree(package, out)
        doc = json.loads((out / "model.json").read_text())
        doc["properties"]["groundbreak:threshold"] = threshold
        (out / "model.json").write_text(json.dumps(doc))
    return out


def write_world(folder: Path, *, size_px: int = 1024) -> Tuple[Path, List[Path]]:
    """Scenes s_DATE.tif (``size_px``² at 2 m, one cloudy corner on the second date) and aois.geojson:
    two overlapping AOIs, one disjoint AOI and a 100 m site inside the first."""
    scenes = []
    for i, day in enumerate(DATES):
        scenes.append(write_scene(folder / ("s_%s.tif" % day), size=(size_px, size_px), seed=i,
                                  date="%s-%s-%s" % (day[:4], day[4:6], day[6:]),
                                  cloud_box=(0, 256, size_px - 256, size_px) if i == 1 else None))
    geoms = [
        box(X0 + 10, Y1 - 1000, X0 + 1000, Y1 - 10),  # a: 2 × 2 chips
        box(X0 + 600, Y1 - 1500, X0 + 1500, Y1 - 600),  # b: overlaps a
        box(X0 + 1600, Y1 - 2030, X0 + 2030, Y1 - 1600),  # c: disjoint
        box(X0 + 100, Y1 - 200, X0 + 200, Y1 - 100),  # site: 100 m, inside a
    ]
    aoi = write_aoi(folder / "aois.geojson", geoms, ids=["a", "b", "c", "site"])
    return aoi, scenes


def records(gpkg: Path):
    """(chips, detections) rows of a run output, sorted, scores rounded."""
    conn = sqlite3.connect(str(gpkg))
    try:
        chips = sorted((r[0], r[1], r[2], r[3], r[4], None if r[5] is None else round(r[5], 5))
                       for r in conn.execute("SELECT scene_id, chip_id, aoi_id, date, status, score FROM chips"))
        dets = sorted((r[0], r[1], r[2], r[3], round(r[4], 5))
                      for r in conn.execute("SELECT scene_id, chip_id, aoi_id, date, score FROM detections"))
    finally:
        conn.close()
    return chips, dets


def corrupt_tile(path: Path, col: int, row: int) -> None:
    """Overwrite the inside of one internal tile with garbage: DEFLATE then fails on that tile only."""
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_%d_%d" % (col, row), "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_%d_%d" % (col, row), "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        fh.write(np.random.default_rng(0).integers(0, 256, size - 32, dtype=np.uint8).tobytes())
