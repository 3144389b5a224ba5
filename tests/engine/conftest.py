"""Shared fixtures: small real GeoTIFFs (real CRSs, nodata edges, cloud masks) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

ORIGIN = (500224.0, 5210112.0)  # UTM 14N, on the 512 m chip grid


def write_scene(
    path: Path,
    *,
    date: Optional[str] = "2024-05-01",
    size: Tuple[int, int] = (768, 640),  # (width, height) px
    origin: Tuple[float, float] = ORIGIN,
    gsd: float = 2.0,
    epsg: int = 32614,
    dtype: str = "uint16",
    count: int = 4,
    nodata: Optional[float] = 0,
    nodata_cols: int = 0,  # left columns set to nodata
    cloud_box: Optional[Tuple[int, int, int, int]] = None,  # (row0, row1, col0, col1) cloudy in the sidecar
    shadow_box: Optional[Tuple[int, int, int, int]] = None,
    seed: int = 0,
    descriptions: Sequence[str] = ("red", "green", "blue", "nir"),
    bright_box: Optional[Tuple[int, int, int, int]] = None,
) -> Path:
    """A tiled, DEFLATE 4-band GeoTIFF with band names, a date tag and an optional class mask."""
    rng = np.random.default_rng(seed)
    w, h = size
    hi = 255 if dtype == "uint8" else 5000
    data = rng.integers(max(1, hi // 20), hi // 3, size=(count, h, w)).astype(dtype)
    if bright_box is not None:
        r0, r1, c0, c1 = bright_box
        data[:, r0:r1, c0:c1] = int(hi * 0.8)
    if nodata_cols:
        data[:, :, :nodata_cols] = 0
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=dtype, crs="EPSG:%d" % epsg,
                   transform=from_origin(origin[0], origin[1], gsd, gsd), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions[:count], start=1):
            dst.set_band_description(i, name)
        if date:
            dst.update_tags(TIFFTAG_DATETIME=date.replace("-", ":") + " 10:30:00")
    if cloud_box is not None or shadow_box is not None:
        mask = np.zeros((h, w), dtype=np.uint8)
        if cloud_box is not None:
            r0, r1, c0, c1 = cloud_box
            mask[r0:r1, c0:c1] = 1
        if shadow_box is not None:
            r0, r1, c0, c1 = shadow_box
            mask[r0:r1, c0:c1] = 2
        mprofile = dict(profile, count=1, dtype="uint8", nodata=None)
        with rasterio.open(path.with_name(path.stem + "_mask.tif"), "w", **mprofile) as dst:
            dst.write(mask[None])
    return path


def write_aoi(path: Path, geometries, *, crs: str = "EPSG:32614", ids: Optional[Sequence[str]] = None) -> Path:
    """A GeoJSON/GeoPackage AOI file through pyogrio (any driver by extension)."""
    import shapely
    from pyogrio.raw import write

    wkb = np.array([shapely.to_wkb(g) for g in geometries], dtype=object)
    fields, names = [], []
    if ids is not None:
        fields.append(np.array(list(ids), dtype=object))
        names.append("aoi_id")
    write(str(path), wkb, fields, fields=names, crs=crs, geometry_type="Polygon" if all(
        g.geom_type == "Polygon" for g in geometries) else "Unknown")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from groundbreak.modelpack import make_random_package

    out = tmp_path_factory.mktemp("model") / "tiny"
    make_random_package(out, seed=3, width=8, threshold=0.5)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Throughput memory and compiled runtimes go to a per-test cache, never the user's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GROUNDBREAK_CACHE", str(tmp_path / "cache" / "groundbreak"))


def real_data() -> Optional[Path]:
    value = os.environ.get("GROUNDBREAK_REAL_DATA")
    return Path(value) if value else None
