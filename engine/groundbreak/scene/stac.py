"""STAC Items, ItemCollections and Catalogs on disk: data assets, band names, dates, mask assets."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from typing import Any, Mapping, Optional

from groundbreak.errors import (
    CorruptFileError,
    MissingFileError,
    UsageError,
)
from groundbreak.masks import (
    DATA_MASK_VALUES,
    GROUNDBREAK_MASK_VALUES,
    SCL_MASK_VALUES,
    MaskSource,
)

from .dates import parse_date
from .record import _is_local

log = logging.getLogger(__name__)

def _stac_date(item: Any) -> Optional[_dt.date]:
    if item.datetime is not None:
        return item.datetime.date()
    start = item.properties.get("start_datetime")
    if start:
        try:
            return parse_date(start)
        except UsageError:
            return None
    return None


def _asset_bands(asset: Any) -> list[Mapping[str, Any]]:
    extra = asset.extra_fields
    for key in ("eo:bands", "bands", "raster:bands"):
        bands = extra.get(key)
        if isinstance(bands, list) and bands:
            return bands
    return []


def _stac_band_names(item: Any, asset: Any) -> Optional[list[str]]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
    if not bands:
        # STAC 0.9 put eo:bands on the item properties.
        bands = item.properties.get("eo:bands")
    if not isinstance(bands, list) or not bands:
        return None
    names = []
    for band in bands:
        if not isinstance(band, Mapping):
            names.append("")
            continue
        names.append(
            band.get("common_name") or band.get("eo:common_name") or band.get("name") or ""
        )
    return names


def _resolve_href(asset: Any, base_dir: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if _is_local(href) and not os.path.isabs(href):
        href = os.path.normpath(os.path.join(base_dir, href))
    if href.startswith("file://"):
        href = href[len("file://"):]
    return href


def _data_asset_key(item: Any) -> str:
    assets = item.assets
    mask_keys = {k for k, a in assets.items() if _is_mask_asset(k, a)}
    candidates = [k for k in assets if k not in mask_keys]
    with_data_role = [k for k in candidates if "data" in (assets[k].roles or [])]
    four_band = [k for k in candidates if len(_asset_bands(assets[k])) == 4]
    for group in (
        [k for k in with_data_role if k in four_band],
        four_band,
        with_data_role if len(with_data_role) == 1 else [],
        [k for k in candidates if k in ("analytic", "image", "data", "visual")],
    ):
        if group:
            return group[0]
    raise UsageError(
        f"STAC item {item.id} has no data asset (an asset with role 'data', or with 4 bands in "
        f"eo:bands/raster:bands); assets: {', '.join(assets) or 'none'}",
        hint="give the multi-band GeoTIFF asset the role 'data' and list its bands in eo:bands "
        "(items with one file per band are not supported: stack them first with "
        "gdalbuildvrt -separate)",
    )


def _is_mask_asset(key: str, asset: Any) -> bool:
    roles = set(asset.roles or [])
    return bool(roles & {"cloud", "cloud-shadow", "data-mask", "snow-ice"}) or key.lower() in (
        "udm2", "scl", "udm",
    )


def _stac_masks(item: Any, base_dir: str) -> list[MaskSource]:
    out = []
    for key, asset in item.assets.items():
        if not _is_mask_asset(key, asset) or key.lower() == "udm":
            continue
        href = _resolve_href(asset, base_dir)
        roles = set(asset.roles or [])
        if key.lower() == "udm2" or len(_asset_bands(asset)) == 8:
            out.append(MaskSource(path=href, kind="udm2", origin="stac-asset"))
        elif key.lower() == "scl":
            out.append(MaskSource.of_classes(href, SCL_MASK_VALUES, origin="stac-asset"))
        elif roles == {"data-mask"} or roles == {"data-mask", "metadata"}:
            out.append(MaskSource.of_classes(href, DATA_MASK_VALUES, origin="stac-asset"))
        else:
            out.append(MaskSource.of_classes(href, GROUNDBREAK_MASK_VALUES, origin="stac-asset"))
    return out


def _asset_key_for_href(item: Any, path: str) -> Optional[str]:
    base = os.path.dirname(path)
    for key, asset in item.assets.items():
        href = _resolve_href(asset, base)
        if href == path or (_is_local(href) and os.path.realpath(href) == os.path.realpath(path)):
            return key
    try:
        return _data_asset_key(item)
    except UsageError:
        return None


def _load_stac(path: str) -> list[tuple[Any, str]]:
    """(item, base folder for relative hrefs) for every item in a STAC JSON file."""
    import pystac

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CorruptFileError(
            f"STAC file {path} is not valid JSON: {exc}", hint="check the file (e.g. `python -m json.tool`)"
        ) from exc
    kind = doc.get("type") if isinstance(doc, dict) else None
    base = os.path.dirname(os.path.abspath(path))
    try:
        if kind == "Feature":
            item = pystac.Item.from_dict(doc, preserve_dict=False)
            item.set_self_href(os.path.abspath(path))
            return [(item, base)]
        if kind == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(doc, preserve_dict=False)
            return [(item, base) for item in collection]
        if kind in ("Catalog", "Collection"):
            catalog = pystac.read_file(os.path.abspath(path))
            if not isinstance(catalog, pystac.Catalog):  # a Collection is a Catalog too
                raise pystac.STACError("%s is not a Catalog or Collection" % path)
            out = []
            for item in catalog.get_items(recursive=True):
                item_base = os.path.dirname(item.get_self_href() or path)
                out.append((item, item_base))
            return out
    except (pystac.STACError, KeyError, ValueError, TypeError) as exc:
        raise CorruptFileError(
            f"STAC file {path} cannot be read: {exc}",
            hint="validate it (e.g. with stac-validator) and check its links",
        ) from exc
    except FileNotFoundError as exc:
        raise MissingFileError(
            f"STAC catalog {path} links to a missing file: {exc.filename or exc}",
            hint="fix the catalog's links (relative links resolve against the JSON file)",
        ) from exc
    raise UsageError(
        f"{path} is JSON but not a STAC Item, ItemCollection, Catalog or Collection "
        f"(type={kind!r})",
        hint="pass a STAC JSON file, a GeoTIFF, a glob or a directory",
    )
