"""Discovery: files, globs, folders and STAC JSON -> scenes (sidecar masks and auxiliary files skipped)."""

from __future__ import annotations

import datetime as _dt
import glob as _glob
import hashlib
import logging
import os
from dataclasses import dataclass, replace
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from groundbreak.errors import (
    MissingFileError,
    UsageError,
)
from groundbreak.masks import (
    MaskRules,
)

from .bands import parse_band_order
from .dates import parse_date
from .opening import open_scene
from .record import _AUXILIARY_SUFFIXES, RASTER_SUFFIXES, STAC_SUFFIXES, Scene, _is_local, _stem
from .sidecars import looks_like_sidecar
from .stac import _data_asset_key, _load_stac, _resolve_href

log = logging.getLogger(__name__)

def _scene_from_item(
    item: Any,
    base_dir: str,
    *,
    band_order: Optional[Sequence[str]],
    date: Optional[Union[str, _dt.date]],
    mask_rules: Optional[MaskRules],
    spec: str,
    require_date: bool = True,
) -> Scene:
    key = _data_asset_key(item)
    href = _resolve_href(item.assets[key], base_dir)
    if _is_local(href) and not os.path.exists(href):
        raise MissingFileError(
            f"STAC item {item.id} in {spec}: asset '{key}' points to {href}, which does not exist",
            hint="fix the asset href (relative hrefs are resolved against the JSON file's folder)",
        )
    # Make every href of the item absolute so the scene's masks resolve from any directory.
    for asset in item.assets.values():
        asset.href = _resolve_href(asset, base_dir)
    return open_scene(
        href, band_order=band_order, date=date, stac_item=item, mask_rules=mask_rules,
        require_date=require_date,
    )


def _is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def _is_stac_name(name: str) -> bool:
    return name.lower().endswith(STAC_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file that discovery looked at and did not take as a scene, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Survey:
    scenes: Tuple[Scene, ...]
    skipped: Tuple[Skipped, ...]


def _expand(spec: str, rules: Optional[MaskRules], skipped: List[Skipped]) -> list[str]:
    """A spec -> file paths (rasters or STAC JSON). Sidecar masks and other non-imagery found in
    folders and globs are left out (and listed in ``skipped``)."""
    if os.path.isdir(spec):
        kept = []
        for name in sorted(os.listdir(spec)):
            path = os.path.join(spec, name)
            if not os.path.isfile(path) or name.startswith("."):
                continue
            why = _not_a_scene(path, rules, in_folder=True)
            if why:
                skipped.append(Skipped(path, why))
            else:
                kept.append(path)
        if not kept:
            raise UsageError(
                f"directory {spec} holds no GeoTIFF scenes (*.tif, *.tiff)",
                hint="point at the folder with the imagery, or list files / a glob / a STAC file",
            )
        return kept
    if _glob.has_magic(spec):
        kept = []
        for path in sorted(p for p in _glob.glob(spec, recursive=True) if os.path.isfile(p)):
            why = _not_a_scene(path, rules, in_folder=False)
            if why:
                skipped.append(Skipped(path, why))
            else:
                kept.append(path)
        if not kept:
            raise UsageError(
                f"the pattern {spec} matched no scene file",
                hint="check the pattern (quote it so the shell does not expand it) and the "
                "current directory",
            )
        return kept
    if not os.path.exists(spec):
        raise MissingFileError(
            f"scene {spec} does not exist", hint="check the path (and the current directory)"
        )
    return [spec]


def _not_a_scene(path: str, rules: Optional[MaskRules], *, in_folder: bool) -> str:
    """Why a file found in a folder or by a glob is not a scene ("" when it may be one)."""
    lower = path.lower()
    if lower.endswith(_AUXILIARY_SUFFIXES):
        return "auxiliary file (GDAL metadata, overview or text)"
    if _is_raster_name(path) and looks_like_sidecar(path, rules):
        return "sidecar quality mask (used as the mask of its scene, never as a scene)"
    if in_folder and not _is_raster_name(path):
        return "not a GeoTIFF (folders are searched for *.tif and *.tiff; pass STAC JSON by name)"
    return ""


def discover_scenes(
    specs: Sequence[str],
    *,
    band_order: Optional[Union[str, Sequence[str]]] = None,
    date: Optional[Union[str, _dt.date]] = None,
    mask_rules: Optional[MaskRules] = None,
    require_date: bool = True,
) -> list[Scene]:
    """Every scene named by ``specs`` (files, globs, directories, STAC JSON), opened (see ``survey_scenes``)."""
    return list(survey_scenes(specs, band_order=band_order, date=date, mask_rules=mask_rules,
                              require_date=require_date).scenes)


def survey_scenes(
    specs: Sequence[str],
    *,
    band_order: Optional[Union[str, Sequence[str]]] = None,
    date: Optional[Union[str, _dt.date]] = None,
    mask_rules: Optional[MaskRules] = None,
    require_date: bool = True,
) -> Survey:
    """Every scene named by ``specs`` (files, globs, directories, STAC JSON), opened, and every file
    looked at but not taken (sidecar masks, auxiliary files), with the reason.

    ``require_date=False`` returns scenes without a date too (``has_date`` False), so a caller can
    report every problem of every scene at once.

    Sorted by (date, scene_id). A file reached twice (two specs, or a file and a STAC item
    pointing at it) is one scene; the STAC one wins because it carries more metadata (two STAC
    items pointing at one file: the first wins). Scene ids
    are file stems or STAC item ids; two different files with the same id get a short suffix from
    their path so ids stay unique.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [os.fspath(specs)]
    if not specs:
        raise UsageError("no scenes given", hint="pass GeoTIFF paths, a glob, a folder or STAC JSON")
    if date is not None:
        date = parse_date(date)
    if band_order is not None:
        band_order = parse_band_order(band_order)

    def key_of(path: str) -> str:
        return os.path.realpath(path) if _is_local(path) else path

    # STAC items first: a file also reached by path is then taken from its item, which carries
    # the date and band names the bare file may lack.
    skipped: List[Skipped] = []
    expanded = [(spec, path) for spec in map(os.fspath, specs) for path in _expand(spec, mask_rules, skipped)]
    by_key: dict[str, Scene] = {}
    for spec, path in expanded:
        if not _is_stac_name(path):
            continue
        items = _load_stac(path)
        if not items:
            log.warning("STAC file %s holds no items", path)
        for item, base in items:
            scene = _scene_from_item(
                item, base, band_order=band_order, date=date, mask_rules=mask_rules, spec=spec,
                require_date=require_date,
            )
            by_key.setdefault(key_of(scene.path), scene)
    listed_stems = {_stem(os.path.basename(p)) for _, p in expanded if not _is_stac_name(p)}
    for _spec, path in expanded:
        if _is_stac_name(path) or key_of(path) in by_key:
            continue
        if _is_sidecar_of_listed(path, listed_stems, mask_rules):
            # An unquoted shell glob (scenes/*.tif) lists the masks next to their scenes.
            log.info("%s is the sidecar mask of a listed scene; not a scene itself", path)
            skipped.append(Skipped(path, "sidecar quality mask of a listed scene (used as its mask)"))
            continue
        scene = open_scene(path, band_order=band_order, date=date, mask_rules=mask_rules,
                           require_date=require_date)
        by_key[key_of(path)] = scene
    if not by_key:
        raise UsageError(
            f"no scene found in {', '.join(map(str, specs))}",
            hint="pass GeoTIFF paths, a glob, a folder or STAC JSON with items",
        )
    scenes = sorted(_unique_ids(by_key), key=lambda s: (s.date, s.scene_id))
    return Survey(tuple(scenes), tuple(skipped))


def _is_sidecar_of_listed(path: str, listed_stems: set, rules: Optional[MaskRules]) -> bool:
    if not looks_like_sidecar(path, rules):
        return False
    stem = _stem(os.path.basename(path))
    return any(other != stem and (stem.startswith(other + "_") or stem.startswith(other + "."))
               for other in listed_stems)


def _unique_ids(by_key: Mapping[str, Scene]) -> list[Scene]:
    counts: dict[str, int] = {}
    for scene in by_key.values():
        counts[scene.scene_id] = counts.get(scene.scene_id, 0) + 1
    out = []
    for key, scene in by_key.items():
        if counts[scene.scene_id] > 1:
            suffix = hashlib.sha1(key.encode()).hexdigest()[:8]
            scene = replace(scene, scene_id=f"{scene.scene_id}-{suffix}")
        out.append(scene)
    return out
