"""A scene as the engine sees it: the ``Scene`` value, its file-name rules, its ground resolution."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from groundbreak.masks import (
    MaskSource,
)

log = logging.getLogger(__name__)

#: Band roles a scene band can have ("" = unknown / not used as data).
BAND_ROLES = ("red", "green", "blue", "nir", "alpha")

RASTER_SUFFIXES = (".tif", ".tiff")
STAC_SUFFIXES = (".json", ".geojson")
# Files GDAL writes next to rasters; never scenes.
_AUXILIARY_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".xml", ".txt", ".md")


#: ``Scene.date_source`` of a scene opened with ``require_date=False`` that has no date; its
#: ``date`` is ``datetime.date.min``, which no plan accepts (suitability reports the problem).
MISSING_DATE_SOURCE = "missing"



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
    # "description" | "stac" | "colorinterp" | "assumed-rgbn" | "assumed-planet-bgrn" | "override"
    # | "" (nothing known); callers warn when it starts with "assumed".
    band_names_source: str
    nodata: Optional[float]
    alpha_band: Optional[int]  # 1-based index, or None
    has_internal_mask: bool  # a per-dataset GDAL mask (e.g. .msk or internal TIFF mask)
    mask_sources: Tuple[MaskSource, ...] = ()
    stac_item_id: Optional[str] = None
    quick_hash: str = ""  # sha256 of size + first/last MiB: cheap provenance, not a full content hash
    band_descriptions: Tuple[str, ...] = ()  # GDAL band descriptions as found ("" when unset)
    colorinterp: Tuple[str, ...] = ()  # GDAL colour interpretation names, e.g. ("red", "undefined")
    band_dtypes: Tuple[str, ...] = ()  # numpy dtype name of every band, in file order
    #: Why the scene has no date (only for scenes surveyed with ``require_date=False``): message, hint.
    date_problem: str = ""
    date_hint: str = ""

    @property
    def has_date(self) -> bool:
        return self.date_source != MISSING_DATE_SOURCE

    @property
    def data_bands(self) -> Tuple[int, ...]:
        """1-based indexes of the bands that are not alpha."""
        return tuple(i + 1 for i, name in enumerate(self.band_names) if name != "alpha")


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in RASTER_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0]


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


def ground_resolution_m(scene: Scene) -> float:
    """Metres per pixel on the ground along the scene's coarser axis (geographic CRSs measured on
    the WGS84 ellipsoid at the scene's centre)."""
    from pyproj import CRS, Geod

    crs = CRS.from_wkt(scene.crs_wkt)
    if crs.is_projected:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        return max(scene.res) * factor
    left, bottom, right, top = scene.bounds
    lon, lat = (left + right) / 2, (bottom + top) / 2
    geod = Geod(ellps="WGS84")
    _, _, dx = geod.inv(lon, lat, lon + scene.res[0], lat)
    _, _, dy = geod.inv(lon, lat, lon, lat + scene.res[1])
    return float(max(abs(dx), abs(dy)))
