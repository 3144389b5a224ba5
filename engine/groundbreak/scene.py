"""Scenes: discovery (paths, globs, STAC), acquisition dates, band roles and mask sources.

CONTRACT (implemented by the scene work; other modules rely on exactly this API):

- ``discover_scenes(specs, *, band_order=None, date=None) -> list[Scene]``: ``specs`` are GeoTIFF/COG
  paths, globs, or STAC Item / ItemCollection / Catalog JSON files on disk. Sorted by (date, scene_id).
  Raises MissingFileError, CorruptFileError, MissingDateError, UsageError (no scene matched).
- ``open_scene(path, *, band_order=None, date=None, stac_item=None) -> Scene``.
- ``select_bands(scene, wanted) -> tuple[int, ...]``: 1-based band indexes of ``scene`` for the
  model's band names, in the model's order. Alpha bands are never data. Raises BandMismatchError
  naming both lists. Never repeats a band.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

#: Pixel classes every mask source decodes into (uint8). Screening counts drops by these.
VALID, NODATA, CLOUD, SHADOW = 0, 1, 2, 3
CLASS_NAMES = {VALID: "valid", NODATA: "nodata", CLOUD: "cloud", SHADOW: "shadow"}


@dataclass(frozen=True, slots=True)
class MaskSource:
    """A sidecar quality mask for a scene.

    kind:
      - ``"udm2"``: Planet UDM2 8-band mask (1 clear, 2 snow, 3 shadow, 4 light haze, 5 heavy haze,
        6 cloud, 7 confidence, 8 legacy UDM). Shadow band -> SHADOW, heavy haze/cloud/snow -> CLOUD,
        legacy UDM != 0 -> NODATA.
      - ``"classes"``: one band of class values (e.g. Sentinel-2 SCL or a 0/1 cloud mask);
        ``cloud_values``/``shadow_values``/``nodata_values`` map values to classes, others are valid.
    """

    path: str
    kind: str
    band: int = 1
    cloud_values: Tuple[int, ...] = ()
    shadow_values: Tuple[int, ...] = ()
    nodata_values: Tuple[int, ...] = ()
    origin: str = ""  # how it was found: "filename-pattern", "stac-asset", "explicit"


@dataclass(frozen=True, slots=True)
class Scene:
    scene_id: str
    path: str  # what rasterio opens (a local path or a GDAL /vsi… href)
    date: _dt.date
    date_source: str  # "stac" | "tiff-tag" | "filename" | "override"
    crs_wkt: str
    epsg: Optional[int]
    bounds: Tuple[float, float, float, float]  # (left, bottom, right, top) in the scene CRS
    res: Tuple[float, float]  # (x, y) pixel size in CRS units, positive
    width: int
    height: int
    count: int
    dtype: str  # numpy dtype name of the data bands, e.g. "uint8", "uint16", "float32"
    band_names: Tuple[str, ...]  # one per band: "red", "green", "blue", "nir", "alpha", or "" unknown
    band_names_source: str  # "description" | "stac" | "colorinterp" | "assumed-rgbn" | "override"
    nodata: Optional[float]
    alpha_band: Optional[int]  # 1-based index, or None
    has_internal_mask: bool  # a per-dataset GDAL mask (e.g. .msk or internal TIFF mask)
    mask_sources: Tuple[MaskSource, ...] = ()
    stac_item_id: Optional[str] = None
    quick_hash: str = ""  # sha256 of size + first/last MiB: cheap provenance, not a full content hash
