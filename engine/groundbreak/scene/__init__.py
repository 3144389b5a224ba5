"""Scenes: discovery (paths, globs, STAC), acquisition dates, band roles and mask sources.

A package face: ``record`` (the Scene value and its ground resolution), ``bands`` (band roles,
``parse_band_order``, ``select_bands``), ``dates``, ``sidecars`` (finding sidecar masks by name),
``stac``, ``opening`` (``open_scene``), ``discovery`` (``discover_scenes``, ``survey_scenes``) and
``description`` (``describe_scene``). Mask decoding and the drop rule live in ``groundbreak.masks``.

CONTRACT (implemented by the scene work; other modules rely on exactly this API):

- ``discover_scenes(specs, *, band_order=None, date=None, mask_rules=None) -> list[Scene]``:
  ``specs`` are GeoTIFF/COG paths, globs, directories, or STAC Item / ItemCollection / Catalog /
  Collection JSON files on disk. Sorted by (date, scene_id), deduplicated by file.
  Raises MissingFileError, CorruptFileError, MissingDateError, UsageError (no scene matched).
- ``open_scene(path, *, band_order=None, date=None, stac_item=None, mask=None) -> Scene``.
- ``select_bands(scene, wanted) -> tuple[int, ...]``: 1-based band indexes of ``scene`` for the
  model's band names, in the model's order. Alpha bands are never data. Raises BandMismatchError
  naming both lists. Never repeats a band.
- ``decode_mask(source, data) -> np.ndarray``: raw sidecar values -> uint8 VALID/NODATA/CLOUD/SHADOW.
- ``describe_scene(scene) -> dict``: JSON-ready summary for ``groundbreak info``.

Rules, in order of precedence:

- dates: ``date=`` override, STAC ``datetime``/``start_datetime``, GeoTIFF ``TIFFTAG_DATETIME`` /
  ``ACQUISITION_DATE`` / ``DATE`` tags, a ``YYYYMMDD`` or ``YYYY-MM-DD`` date in the file name.
- band roles: ``band_order=`` override, band descriptions, STAC ``eo:bands`` common names, GDAL colour
  interpretation (R,G,B + an undefined 4th band means R,G,B,NIR, the NAIP convention), then for a
  4-band file with no labels at all, R,G,B,NIR assumed (``band_names_source == "assumed-rgbn"``,
  callers warn). Planet ``*_AnalyticMS*`` files without labels are blue-green-red-NIR, Planet's
  documented order (``"assumed-planet-bgrn"``).
- sidecar masks: ``{stem}_udm2.tif`` (Planet UDM2), ``{stem}_SCL.tif`` (Sentinel-2 scene classes),
  ``{stem}_mask.tif`` / ``{stem}_cloudmask.tif`` (Groundbreak classes: 0 clear, 1 cloud, 2 shadow,
  255 nodata), Planet ``X_3B_AnalyticMS*.tif`` next to ``X_3B_udm2*.tif``, STAC assets with role
  cloud / cloud-shadow / data-mask or key udm2 / SCL; ``MaskRules`` overrides the pattern and values.
"""

from .bands import band_role, parse_band_order, select_bands
from .dates import date_from_name, parse_date
from .description import describe_scene, scene_warnings
from .discovery import Skipped, Survey, discover_scenes, survey_scenes
from .opening import open_scene, quick_hash
from .record import BAND_ROLES, MISSING_DATE_SOURCE, Scene, ground_resolution_m
from .sidecars import looks_like_sidecar

__all__ = [
    "BAND_ROLES", "MISSING_DATE_SOURCE", "Scene", "Skipped", "Survey", "band_role", "date_from_name",
    "describe_scene", "discover_scenes", "ground_resolution_m", "looks_like_sidecar", "open_scene",
    "parse_band_order", "parse_date", "quick_hash", "scene_warnings", "select_bands", "survey_scenes",
]
