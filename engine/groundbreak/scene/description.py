"""What ``groundbreak info`` says about a scene."""

from __future__ import annotations

import logging
from typing import Any, Optional

from .record import Scene

log = logging.getLogger(__name__)

def scene_warnings(scene: Scene) -> list[str]:
    """Things a user should know before trusting results from this scene."""
    out = []
    if scene.band_names_source == "assumed-rgbn":
        out.append(
            "band names assumed R,G,B,NIR (the file does not label its bands); "
            "pass --band-order if that is wrong"
        )
    elif scene.band_names_source == "assumed-planet-bgrn":
        out.append(
            "band names assumed from Planet's documented order (B,G,R,NIR); "
            "pass --band-order if that is wrong"
        )
    elif scene.band_names_source == "colorinterp" and "nir" in scene.band_names:
        nir = scene.band_names.index("nir")
        if nir < len(scene.colorinterp) and scene.colorinterp[nir] == "undefined":
            out.append(f"band {nir + 1} taken as NIR (R,G,B + undefined 4th band, NAIP convention)")
    unknown = [str(i + 1) for i, n in enumerate(scene.band_names) if not n]
    if unknown:
        out.append(f"band(s) {', '.join(unknown)} have no known role and will not be used")
    if not scene.mask_sources:
        valid_from = []
        if scene.nodata is not None:
            valid_from.append("nodata")
        if scene.alpha_band is not None:
            valid_from.append("the alpha band")
        if scene.has_internal_mask:
            valid_from.append("the internal mask")
        if valid_from:
            out.append(f"no mask source: only {' and '.join(valid_from)} will screen chips "
                       "(clouds are not masked)")
        else:
            out.append("no mask source and no nodata: every pixel counts as valid")
    if scene.date_source == "tiff-tag":
        out.append("date from TIFFTAG_DATETIME, which some tools set to the processing time")
    if scene.epsg is None:
        out.append("the CRS has no EPSG code")
    return out


def describe_scene(scene: Scene) -> dict[str, Any]:
    """A JSON-ready summary of a scene for ``groundbreak info``."""
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    crs_name = ""
    lonlat: Optional[list[float]] = None
    try:
        crs = CRS.from_wkt(scene.crs_wkt)
        crs_name = crs.name
        lonlat = [round(v, 7) for v in transform_bounds(scene.crs_wkt, "EPSG:4326", *scene.bounds)]
    except Exception as exc:  # a CRS pyproj/GDAL cannot handle should not break info
        log.debug("cannot describe CRS of %s: %s", scene.path, exc)

    bands = []
    for i, name in enumerate(scene.band_names):
        bands.append(
            {
                "index": i + 1,
                "name": name,
                "description": scene.band_descriptions[i] if i < len(scene.band_descriptions) else "",
                "colorinterp": scene.colorinterp[i] if i < len(scene.colorinterp) else "",
            }
        )
    return {
        "id": scene.scene_id,
        "path": scene.path,
        "date": scene.date.isoformat(),
        "date_source": scene.date_source,
        "stac_item_id": scene.stac_item_id,
        "crs": {"epsg": scene.epsg, "name": crs_name},
        "resolution": list(scene.res),
        "size": {"width": scene.width, "height": scene.height, "bands": scene.count},
        "bounds": list(scene.bounds),
        "bounds_lonlat": lonlat,
        "dtype": scene.dtype,
        "bands": bands,
        "band_names_source": scene.band_names_source,
        "nodata": scene.nodata,
        "alpha_band": scene.alpha_band,
        "internal_mask": scene.has_internal_mask,
        "mask_sources": [
            {
                "path": m.path,
                "kind": m.kind,
                "origin": m.origin,
                "band": m.band,
                "cloud_values": list(m.cloud_values),
                "shadow_values": list(m.shadow_values),
                "nodata_values": list(m.nodata_values),
            }
            for m in scene.mask_sources
        ],
        "quick_hash": scene.quick_hash,
        "warnings": scene_warnings(scene),
    }
