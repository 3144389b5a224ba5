"""Small georeferenced rasters for the scene tests (fixed seed, real CRSs, nodata edges)."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

# A 2 m grid in UTM 14N (North Dakota, like the NAIP series).
UTM14 = "EPSG:32614"
ORIGIN = (485_900.0, 5_209_250.0)


def write_raster(
    path: str | os.PathLike,
    *,
    count: int = 4,
    width: int = 64,
    height: int = 48,
    dtype: str = "uint8",
    crs: Optional[str] = UTM14,
    res: float = 2.0,
    origin: tuple[float, float] = ORIGIN,
    nodata: Optional[float] = 0,
    nodata_edge: int = 4,
    descriptions: Optional[Sequence[Optional[str]]] = None,
    colorinterp: Optional[Sequence[ColorInterp]] = None,
    tags: Optional[Mapping[str, str]] = None,
    data: Optional[np.ndarray] = None,
    internal_mask: bool = False,
    tiled: bool = False,
    seed: int = 0,
) -> str:
    """Write a GeoTIFF; the left ``nodata_edge`` columns hold ``nodata`` when it is set."""
    path = os.fspath(path)
    if data is None:
        rng = np.random.default_rng(seed)
        hi = 255 if dtype == "uint8" else 4000
        data = rng.integers(1, hi, size=(count, height, width)).astype(dtype)
        if nodata is not None and nodata_edge:
            data[:, :, :nodata_edge] = nodata
    count, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=str(data.dtype),
        transform=Affine(res, 0.0, origin[0], 0.0, -res, origin[1]),
    )
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    if colorinterp is not None:
        # GTiff derives colour interpretation from PHOTOMETRIC and ExtraSamples, which must be
        # declared at creation (else a 4th band after R,G,B silently becomes alpha).
        if list(colorinterp[:3]) == [ColorInterp.red, ColorInterp.green, ColorInterp.blue]:
            profile["photometric"] = "RGB"
        profile["alpha"] = "YES" if ColorInterp.alpha in colorinterp else "NO"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions is not None:
            for i, text in enumerate(descriptions, start=1):
                if text is not None:
                    dst.set_band_description(i, text)
        if colorinterp is not None:
            dst.colorinterp = list(colorinterp)
        if tags:
            dst.update_tags(**tags)
        if internal_mask:
            mask = np.full((height, width), 255, dtype=np.uint8)
            mask[: height // 4] = 0
            dst.write_mask(mask)
    return path


def write_udm2(
    path: str | os.PathLike,
    *,
    width: int = 64,
    height: int = 48,
    crs: str = UTM14,
    cloud_rows: slice = slice(0, 0),
    shadow_rows: slice = slice(0, 0),
    blackfill_cols: slice = slice(0, 0),
) -> str:
    """A Planet UDM2-like 8-band mask: clear everywhere except the given rows/columns."""
    bands = np.zeros((8, height, width), dtype=np.uint8)
    bands[0] = 1
    bands[6] = 80  # confidence
    bands[5, cloud_rows] = 1
    bands[0, cloud_rows] = 0
    bands[2, shadow_rows] = 1
    bands[0, shadow_rows] = 0
    bands[:, :, blackfill_cols] = 0
    bands[7, :, blackfill_cols] = 1
    write_raster(
        path,
        data=bands,
        nodata=None,
        crs=crs,
        descriptions=("clear", "snow", "shadow", "haze_light", "haze_heavy", "cloud", "confidence", "udm1"),
    )
    return os.fspath(path)


def write_classes(path: str | os.PathLike, values: np.ndarray, *, crs: str = UTM14) -> str:
    """A one-band class mask (e.g. Groundbreak 0/1/2/255 or Sentinel-2 SCL)."""
    return write_raster(path, data=values[np.newaxis].astype(np.uint8), nodata=None, crs=crs)


def truncate(path: str | os.PathLike, keep_fraction: float) -> str:
    """Cut a file to a fraction of its bytes, like an interrupted download."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep_fraction))
    return path
