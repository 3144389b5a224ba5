"""Synthetic fleet inputs for the benchmark: many AOIs of sizes spanning orders of magnitude, and scene
tiles over many dates, as values (planning needs only their extents and metadata, not pixels)."""

from __future__ import annotations

import datetime as dt
import math
from typing import List, Sequence, Tuple

import numpy as np
import shapely
from pyproj import CRS, Transformer

from groundbreak.aoi import AOI
from groundbreak.scene import Scene

EPSG = 32614
X0, Y0 = 400_000.0, 5_100_000.0  # UTM 14N (North Dakota): the south-west corner of the region


def log_sizes(n: int, lo_km2: float, hi_km2: float, seed: int = 0) -> np.ndarray:
    """``n`` AOI areas in km², log-uniform between ``lo_km2`` and ``hi_km2`` (a realistic long tail:
    most AOIs are sites, a few are metros)."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(math.log(lo_km2), math.log(hi_km2), n))


def make_aois(sizes_km2: Sequence[float], *, region_km: float, seed: int = 0) -> List[AOI]:
    """Square AOIs of the given areas at random places in a ``region_km``² region, in lon/lat."""
    rng = np.random.default_rng(seed + 1)
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    region = region_km * 1000.0
    out = []
    for i, km2 in enumerate(sizes_km2):
        side = math.sqrt(km2) * 1000.0
        side = min(side, region)
        x = X0 + rng.uniform(0, region - side)
        y = Y0 + rng.uniform(0, region - side)
        poly = shapely.segmentize(shapely.box(x, y, x + side, y + side), max(side / 4, 1.0))
        lonlat = shapely.transform(poly, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
        out.append(AOI(aoi_id="aoi%05d" % i, geometry=lonlat, source="bench", source_crs="EPSG:%d" % EPSG))
    return out


def make_scenes(*, region_km: float, tiles_per_side: int, dates: int, gsd: float = 2.0) -> List[Scene]:
    """``tiles_per_side``² scene tiles covering the region, each on ``dates`` dates (4-band uint16)."""
    wkt = CRS.from_epsg(EPSG).to_wkt()
    tile = region_km * 1000.0 / tiles_per_side
    px = int(round(tile / gsd))
    scenes = []
    for d in range(dates):
        date = dt.date(2024, 1, 1) + dt.timedelta(days=14 * d)
        for j in range(tiles_per_side):
            for i in range(tiles_per_side):
                left, bottom = X0 + i * tile, Y0 + j * tile
                sid = "t%02d_%02d_%s" % (i, j, date.strftime("%Y%m%d"))
                scenes.append(Scene(
                    scene_id=sid, path="/data/%s.tif" % sid, date=date, date_source="filename", crs_wkt=wkt,
                    epsg=EPSG, bounds=(left, bottom, left + tile, bottom + tile), res=(gsd, gsd), width=px,
                    height=px, count=4, dtype="uint16", band_names=("red", "green", "blue", "nir"),
                    band_names_source="description", nodata=0.0, alpha_band=None, has_internal_mask=False))
    return scenes


def region_of(sizes: Sequence[float]) -> Tuple[float, float]:
    return float(np.sum(sizes)), float(np.max(sizes))
