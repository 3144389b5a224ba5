"""Opening one raster as a Scene (metadata only)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from groundbreak.errors import (
    CorruptFileError,
    MissingFileError,
    UsageError,
)
from groundbreak.masks import (
    MaskRules,
    MaskSource,
)

from .bands import _assign_band_names
from .dates import _DATE_TAGS, _date_from_tag, _missing_date, date_from_name, parse_date
from .record import MISSING_DATE_SOURCE, Scene, _is_local, _stem
from .sidecars import _check_mask, _find_sidecars, _mask_from_explicit
from .stac import _asset_key_for_href, _stac_band_names, _stac_date, _stac_masks

log = logging.getLogger(__name__)

_MIB = 1 << 20

def quick_hash(path: str) -> str:
    """sha256 over the file size and its first and last MiB.

    Cheap provenance that catches a replaced or re-processed file; it is NOT a full content hash
    (an edit in the middle of a large file goes unnoticed). "" for non-local paths.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return ""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_MIB))
        if size > _MIB:
            fh.seek(max(_MIB, size - _MIB))
            digest.update(fh.read(_MIB))
    return digest.hexdigest()


def _corrupt(path: str, what: str, exc: BaseException) -> CorruptFileError:
    return CorruptFileError(
        f"{path} {what}: {exc}",
        hint="check the file is a complete GeoTIFF (re-download or re-export it; "
        "`gdalinfo -checksum` shows whether GDAL can read it all)",
    )


def open_scene(
    path: Union[str, os.PathLike],
    *,
    band_order: Optional[Union[str, Sequence[str]]] = None,
    date: Optional[Union[str, _dt.date]] = None,
    stac_item: Optional[Any] = None,
    mask: Optional[Union[str, os.PathLike, MaskSource]] = None,
    mask_rules: Optional[MaskRules] = None,
    scene_id: Optional[str] = None,
    require_date: bool = True,
) -> Scene:
    """Open one raster and describe it as a Scene (metadata only; the last block is read to catch
    truncated files early).

    Without a date the scene is a MissingDateError, unless ``require_date`` is False: then it is
    returned with ``date_source == "missing"`` so its other problems can be reported with it.

    ``stac_item`` (a ``pystac.Item``) supplies the date, band names, id and mask assets when the
    raster came from STAC. ``mask`` is an explicit sidecar mask (path or MaskSource) added to the
    ones found by file-name pattern.
    """
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import RasterioIOError

    path = os.fspath(path)
    if _is_local(path):
        if not os.path.exists(path):
            raise MissingFileError(
                f"scene file {path} does not exist", hint="check the path (and the current directory)"
            )
        if os.path.isdir(path):
            raise UsageError(
                f"{path} is a directory", hint="pass it to discover_scenes, or name a .tif inside it"
            )

    stac_names: Optional[list[str]] = None
    stac_date: Optional[_dt.date] = None
    stac_masks: list[MaskSource] = []
    stac_id: Optional[str] = None
    if stac_item is not None:
        stac_id = stac_item.id
        stac_date = _stac_date(stac_item)
        asset_key = _asset_key_for_href(stac_item, path)
        if asset_key is not None:
            stac_names = _stac_band_names(stac_item, stac_item.assets[asset_key])
        stac_masks = _stac_masks(stac_item, base_dir=os.path.dirname(path))

    try:
        with rasterio.open(path) as ds:
            count = ds.count
            width, height = ds.width, ds.height
            if ds.crs is None:
                raise CorruptFileError(
                    f"{path} has no coordinate reference system, so its pixels cannot be placed "
                    "on the ground",
                    hint="assign one, e.g. gdal_edit.py -a_srs EPSG:32614 " + path,
                )
            crs_wkt = ds.crs.to_wkt()
            epsg = ds.crs.to_epsg()
            bounds = tuple(float(v) for v in ds.bounds)
            res = (abs(float(ds.res[0])), abs(float(ds.res[1])))
            descriptions = [d or "" for d in ds.descriptions]
            colorinterp = [c.name for c in ds.colorinterp]
            dtypes = list(ds.dtypes)
            nodata = ds.nodata
            flags = ds.mask_flag_enums
            tags = ds.tags()
            if _is_local(path) and width > 0 and height > 0:
                # Truncated files often open (the header is intact) and fail on the last blocks.
                ds.read(window=((height - 1, height), (width - 1, width)))
    except CorruptFileError:
        raise
    except RasterioIOError as exc:
        raise _corrupt(path, "cannot be read as a raster", exc) from exc
    except Exception as exc:  # GDAL surfaces damaged headers as assorted errors
        raise _corrupt(path, "is damaged", exc) from exc

    names, names_source = _assign_band_names(
        count, descriptions, colorinterp, stac_names, band_order, path
    )
    alpha_band = next((i + 1 for i, n in enumerate(names) if n == "alpha"), None)
    has_internal_mask = any(
        MaskFlags.per_dataset in f and MaskFlags.alpha not in f and MaskFlags.nodata not in f
        for f in flags
    )
    data_dtypes = [dtypes[i] for i, n in enumerate(names) if n != "alpha"] or dtypes
    dtype = str(np.dtype(data_dtypes[0]))

    date_problem = date_hint = ""
    if date is not None:
        when, date_source = parse_date(date), "override"
    elif stac_date is not None:
        when, date_source = stac_date, "stac"
    else:
        tagged: Optional[_dt.date] = None
        for tag in _DATE_TAGS:
            if tag in tags:
                tagged = _date_from_tag(tags[tag])
                if tagged:
                    break
        date_source = "tiff-tag"
        if tagged is None:
            tagged, date_source = date_from_name(path), "filename"
        if tagged is not None:
            when = tagged
        else:
            missing = _missing_date(path)
            if require_date:
                raise missing
            when, date_source = _dt.date.min, MISSING_DATE_SOURCE
            date_problem, date_hint = missing.message, missing.hint

    masks: list[MaskSource] = list(stac_masks)
    if mask is not None:
        masks.append(_mask_from_explicit(mask, mask_rules))
    if _is_local(path):
        known = {os.path.realpath(m.path) for m in masks if _is_local(m.path)}
        for found in _find_sidecars(path, mask_rules):
            if os.path.realpath(found.path) not in known:
                masks.append(found)
    for source in masks:
        if _is_local(source.path) and not os.path.exists(source.path):
            raise MissingFileError(
                f"mask {source.path} for {path} does not exist",
                hint="fix the mask path or the STAC asset href",
            )
        if _is_local(source.path):
            _check_mask(source, path)

    return Scene(
        scene_id=scene_id or stac_id or _stem(path),
        path=path,
        date=when,
        date_source=date_source,
        crs_wkt=crs_wkt,
        epsg=epsg,
        bounds=bounds,  # type: ignore[arg-type]
        res=res,
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        band_names=names,
        band_names_source=names_source,
        nodata=None if nodata is None else float(nodata),
        alpha_band=alpha_band,
        has_internal_mask=has_internal_mask,
        mask_sources=tuple(masks),
        stac_item_id=stac_id,
        quick_hash=quick_hash(path) if _is_local(path) else "",
        band_descriptions=tuple(descriptions),
        colorinterp=tuple(colorinterp),
        band_dtypes=tuple(str(np.dtype(d)) for d in dtypes),
        date_problem=date_problem,
        date_hint=date_hint,
    )


