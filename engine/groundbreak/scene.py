"""Scenes: discovery (paths, globs, STAC), acquisition dates, band roles and mask sources.

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

from __future__ import annotations

import datetime as _dt
import functools
import glob as _glob
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from groundbreak.errors import (
    BandMismatchError,
    CorruptFileError,
    MissingDateError,
    MissingFileError,
    UsageError,
)
from groundbreak.masks import (
    DATA_MASK_VALUES,
    GROUNDBREAK_MASK_VALUES,
    SCL_MASK_VALUES,
    MaskRules,
    MaskSource,
)

log = logging.getLogger(__name__)

#: Band roles a scene band can have ("" = unknown / not used as data).
BAND_ROLES = ("red", "green", "blue", "nir", "alpha")

RASTER_SUFFIXES = (".tif", ".tiff")
STAC_SUFFIXES = (".json", ".geojson")
# Files GDAL writes next to rasters; never scenes.
_AUXILIARY_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".xml", ".txt", ".md")

_MIB = 1 << 20

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


# --------------------------------------------------------------------------------------------
# Band names

_ROLE_SYNONYMS: dict[str, str] = {}
for _role, _names in {
    # Sentinel-2 band numbers (B02/B03/B04/B08) are the common "bN" labels in descriptions;
    # Landsat numbers differ, which is why an explicit --band-order always wins.
    "red": ("red", "r", "b4", "b04", "band4red", "rouge"),
    "green": ("green", "g", "b3", "b03", "vert"),
    "blue": ("blue", "b", "b2", "b02", "bleu"),
    "nir": (
        "nir", "nir08", "nir09", "nearinfrared", "nearir", "ir", "infrared", "b8", "b08", "b8a",
        "nir1",
    ),
    "alpha": ("alpha", "mask", "alphaband"),
}.items():
    for _name in _names:
        _ROLE_SYNONYMS[_name] = _role

_UNKNOWN_TOKENS = {"", "-", "_", "none", "skip", "unknown", "undefined", "gray", "grey"}


def _normalise_name(text: Optional[str]) -> str:
    return re.sub(r"[\s_\-.:()]+", "", (text or "").strip().lower())


def band_role(text: Optional[str]) -> str:
    """The role ("red", "green", "blue", "nir", "alpha") a band label means, or "" if none."""
    return _ROLE_SYNONYMS.get(_normalise_name(text), "")


def parse_band_order(order: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``"red,green,blue,nir"`` or a sequence -> normalised roles.

    Known synonyms become roles; "", "-", "skip" mark a band that is not data; other labels are
    kept lower-cased (e.g. "rededge") so a model that asks for them can still find them.
    """
    items = order.split(",") if isinstance(order, str) else list(order)
    out = []
    for item in items:
        token = _normalise_name(item)
        if token in _UNKNOWN_TOKENS:
            out.append("")
        else:
            out.append(_ROLE_SYNONYMS.get(token, token))
    named = [n for n in out if n]
    dupes = sorted({n for n in named if named.count(n) > 1})
    if dupes:
        raise UsageError(
            f"band order {','.join(out)} names {', '.join(dupes)} more than once",
            hint="give each band of the file one name, e.g. --band-order red,green,blue,nir "
            "(use '-' for a band to ignore)",
        )
    if not named:
        raise UsageError("band order names no band", hint="e.g. --band-order red,green,blue,nir")
    return tuple(out)


_CI_ROLES = {"red": "red", "green": "green", "blue": "blue", "alpha": "alpha"}

_PLANET_ANALYTIC = re.compile(r"_(AnalyticMS|Analytic)(?:_|\.|$)", re.IGNORECASE)
_PLANET_8B = re.compile(r"_AnalyticMS_8b", re.IGNORECASE)


def _assign_band_names(
    count: int,
    descriptions: Sequence[Optional[str]],
    colorinterp: Sequence[str],
    stac_names: Optional[Sequence[str]],
    band_order: Optional[Sequence[str]],
    path: str,
) -> Tuple[Tuple[str, ...], str]:
    ci_roles = [_CI_ROLES.get(c, "") for c in colorinterp]
    if band_order is not None:
        order = parse_band_order(band_order)
        if len(order) == count:
            return order, "override"
        # An alpha band GDAL already knows about need not be listed: "red,green,blue" for RGBA.
        non_alpha = [i for i, r in enumerate(ci_roles) if r != "alpha"]
        if len(order) == len(non_alpha) and len(non_alpha) < count:
            names = list(ci_roles)
            for i, name in zip(non_alpha, order):
                names[i] = name
            return tuple(names), "override"
        raise UsageError(
            f"band order {','.join(order)} has {len(order)} names but {path} has {count} bands",
            hint=f"give one name per band ({count}), e.g. --band-order "
            + ",".join((["red", "green", "blue", "nir"] + ["-"] * count)[:count]),
        )

    sources: list[tuple[str, list[str]]] = [
        ("description", [band_role(d) for d in descriptions]),
    ]
    if stac_names is not None and len(stac_names) == count:
        sources.append(("stac", [band_role(n) for n in stac_names]))
    sources.append(("colorinterp", ci_roles))

    names = [""] * count
    source = ""
    for source_name, roles in sources:
        # A later source only fills bands still unknown, with roles no earlier source used;
        # duplicates within one source stay, so select_bands can report them as ambiguous.
        used = set(names)
        for i, role in enumerate(roles):
            if not names[i] and role and role not in used:
                names[i] = role
        if not source and any(r and r != "alpha" for r in roles):
            source = source_name
    if not source and any(names):
        source = "colorinterp" if any(ci_roles) else "description"

    data_idx = [i for i, n in enumerate(names) if n != "alpha"]
    data_names = [names[i] for i in data_idx]
    if len(data_idx) == 4 and data_names[:3] == ["red", "green", "blue"] and not data_names[3]:
        # NAIP convention: R, G, B labelled, the 4th band (undefined) is near-infrared.
        names[data_idx[3]] = "nir"
    elif not any(data_names):
        name = os.path.basename(path)
        if len(data_idx) == 4 and _PLANET_ANALYTIC.search(name):
            for i, role in zip(data_idx, ("blue", "green", "red", "nir")):
                names[i] = role
            source = "assumed-planet-bgrn"
        elif len(data_idx) == 8 and _PLANET_8B.search(name):
            # Planet 8-band order: coastal blue, blue, green I, green, yellow, red, red edge, NIR.
            for i, role in zip(data_idx, ("", "blue", "", "green", "", "red", "", "nir")):
                names[i] = role
            source = "assumed-planet-bgrn"
        elif len(data_idx) == 4:
            for i, role in zip(data_idx, ("red", "green", "blue", "nir")):
                names[i] = role
            source = "assumed-rgbn"
    return tuple(names), source


def select_bands(scene: Scene, wanted: Sequence[str]) -> Tuple[int, ...]:
    """1-based indexes of ``scene``'s bands for the model's band names ``wanted``, in that order.

    Alpha is never data, no band is used twice and none is invented: a 3-band RGB file for an
    RGBN model is a BandMismatchError that lists both the model's and the scene's bands.
    """
    wanted_roles = [_ROLE_SYNONYMS.get(_normalise_name(w), _normalise_name(w)) for w in wanted]
    if not wanted_roles:
        raise UsageError("the model declares no input bands", hint="fix the model package")
    indexes: list[int] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    repeated = sorted({r for r in wanted_roles if wanted_roles.count(r) > 1})
    if repeated:
        raise UsageError(
            f"the model asks for band(s) {', '.join(repeated)} more than once",
            hint="a model must declare each input band once; fix the model package",
        )
    for want, role in zip(wanted, wanted_roles):
        hits = [
            i + 1
            for i, name in enumerate(scene.band_names)
            if name and name == role and role != "alpha"
        ]
        if len(hits) == 1 and hits[0] not in indexes:
            indexes.append(hits[0])
        elif len(hits) > 1:
            ambiguous.append(want)
        else:
            missing.append(want)
    if missing or ambiguous:
        have = ", ".join(
            f"{i + 1}={name or '?'}" for i, name in enumerate(scene.band_names)
        ) or "none"
        problem = []
        if missing:
            problem.append(f"has no {', '.join(missing)} band")
        if ambiguous:
            problem.append(f"has more than one band named {', '.join(ambiguous)}")
        unlabelled = scene.band_names_source in ("", "assumed-rgbn", "assumed-planet-bgrn") or any(
            not n for n in scene.band_names
        )
        n_data = len(scene.data_bands)
        if n_data < len(wanted_roles):
            fix = (
                f"the file has only {n_data} data band(s) and the model needs {len(wanted_roles)}: "
                f"use imagery with {', '.join(wanted_roles)} bands, or a model for "
                f"{', '.join(n for n in scene.band_names if n and n != 'alpha') or 'these bands'}"
            )
            if scene.alpha_band is not None:
                fix += (
                    f" (band {scene.alpha_band} is alpha; if it really holds data, name every "
                    "band with --band-order, e.g. --band-order red,green,blue,nir)"
                )
        elif unlabelled:
            fix = (
                "if the file's bands are unlabelled or mislabelled, name them in file order, e.g. "
                "--band-order red,green,blue,nir (use '-' for a band to ignore), or use a model "
                "for these bands"
            )
        else:
            fix = (
                "name the bands in file order with --band-order red,green,blue,nir if the labels "
                "are wrong, or use a model made for these bands"
            )
        raise BandMismatchError(
            f"scene {scene.scene_id} ({scene.path}) {' and '.join(problem)}: the model needs "
            f"bands [{', '.join(wanted_roles)}], the scene has [{have}] "
            f"(names from {scene.band_names_source or 'nothing'})",
            hint=fix,
        )
    return tuple(indexes)


# --------------------------------------------------------------------------------------------
# Dates

_DATE_IN_NAME = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
_TAG_DATE = re.compile(r"^\s*(\d{4})[:\-/]?(\d{2})[:\-/]?(\d{2})")
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITION_DATE", "ACQUISITIONDATE", "DATE", "DATETIME")


def _valid_date(y: str, m: str, d: str) -> Optional[_dt.date]:
    year = int(y)
    if not 1970 <= year <= 2100:
        return None
    try:
        return _dt.date(year, int(m), int(d))
    except ValueError:
        return None


def date_from_name(name: str) -> Optional[_dt.date]:
    """The first valid calendar date (1970–2100) in a file name, as YYYY-MM-DD or YYYYMMDD."""
    base = os.path.basename(name)
    for pattern in _DATE_IN_NAME:
        for match in pattern.finditer(base):
            found = _valid_date(*match.groups())
            if found:
                return found
    return None


def _date_from_tag(value: str) -> Optional[_dt.date]:
    match = _TAG_DATE.match(value or "")
    return _valid_date(*match.groups()) if match else None


def parse_date(value: Union[str, _dt.date, _dt.datetime]) -> _dt.date:
    """``"YYYY-MM-DD"`` (or a date) -> date; UsageError otherwise."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise UsageError(
            f"date {value!r} is not a calendar date", hint="write it as YYYY-MM-DD, e.g. 2021-06-30"
        ) from None


def _missing_date(path: str) -> MissingDateError:
    return MissingDateError(
        f"no acquisition date for {path}: no STAC datetime, no TIFFTAG_DATETIME/ACQUISITION_DATE "
        "tag and no YYYYMMDD or YYYY-MM-DD date in the file name",
        hint="rename the file with its date (e.g. scene_20210630.tif), or set the tag with "
        f"gdal_edit.py -mo TIFFTAG_DATETIME='2021:06:30 00:00:00' {path}, or describe it with a "
        "STAC item, or pass --date 2021-06-30 for a single scene",
    )


# --------------------------------------------------------------------------------------------
# Sidecar masks


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in RASTER_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0]


# (suffix after the stem, kind, default values) for the built-in patterns.
_BUILTIN_SIDECARS: Tuple[Tuple[str, str, Mapping[str, Tuple[int, ...]]], ...] = (
    ("_udm2", "udm2", {}),
    ("_SCL", "classes", SCL_MASK_VALUES),
    ("_scl", "classes", SCL_MASK_VALUES),
    ("_cloudmask", "classes", GROUNDBREAK_MASK_VALUES),
    ("_mask", "classes", GROUNDBREAK_MASK_VALUES),
)
# Built-in sidecar names end with the suffix; Planet's put it mid-name (X_3B_udm2_clip).
_SIDECAR_NAME = re.compile(r"(_udm2|_scl|_cloudmask|_mask)$|_3B_udm2?(_|$)", re.IGNORECASE)
_PLANET_SCENE = re.compile(r"^(?P<prefix>.+_3B)_Analytic(?:MS)?(?P<rest>.*)$", re.IGNORECASE)


def _with_values(
    path: str, kind: str, defaults: Mapping[str, Tuple[int, ...]], rules: Optional[MaskRules],
    origin: str,
) -> MaskSource:
    values = dict(defaults) if kind == "classes" else {}
    if rules is not None and kind == "classes":
        for key in ("cloud_values", "shadow_values", "nodata_values"):
            override = getattr(rules, key)
            if override is not None:
                values[key] = tuple(int(v) for v in override)
    return MaskSource(path=path, kind=kind, origin=origin, **values)


@functools.lru_cache(maxsize=64)
def _cached_listdir(folder: str, mtime_ns: int) -> Tuple[str, ...]:
    return tuple(sorted(os.listdir(folder)))


def _listdir(folder: str) -> Tuple[str, ...]:
    """Sorted entries of a folder, listed once per change (discovery asks once per scene)."""
    try:
        return _cached_listdir(folder, os.stat(folder).st_mtime_ns)
    except OSError:
        return ()


def _find_sidecars(path: str, rules: Optional[MaskRules]) -> list[MaskSource]:
    """Sidecar masks next to a local scene file, by file-name pattern."""
    folder = os.path.dirname(path) or "."
    stem = _stem(path)
    found: list[MaskSource] = []
    if rules is not None and rules.pattern:
        candidate = os.path.join(folder, rules.pattern.format(stem=stem))
        if os.path.isfile(candidate):
            kind = rules.kind or "classes"
            found.append(
                _with_values(candidate, kind, GROUNDBREAK_MASK_VALUES, rules, "filename-pattern")
            )
        return found
    entries = _listdir(folder)
    lower = {e.lower(): e for e in entries}
    seen_keys: set[str] = set()
    for suffix, kind, defaults in _BUILTIN_SIDECARS:
        for ext in RASTER_SUFFIXES:
            key = (stem + suffix + ext).lower()
            if key in lower and key not in seen_keys:
                seen_keys.add(key)
                if rules is not None and rules.kind:
                    kind = rules.kind
                found.append(
                    _with_values(
                        os.path.join(folder, lower[key]), kind, defaults, rules, "filename-pattern"
                    )
                )
    planet = _PLANET_SCENE.match(stem)
    if planet and not any(m.kind == "udm2" for m in found):
        prefix = planet.group("prefix").lower() + "_udm2"
        for entry in entries:
            low = entry.lower()
            if low.startswith(prefix) and low.endswith(RASTER_SUFFIXES):
                found.append(
                    MaskSource(path=os.path.join(folder, entry), kind="udm2", origin="filename-pattern")
                )
                break
    return found


def looks_like_sidecar(path: str, rules: Optional[MaskRules] = None) -> bool:
    """True when a file name is a sidecar mask by the built-in or custom patterns."""
    base = os.path.basename(path)
    if rules is not None and rules.pattern:
        pieces = [re.escape(p) for p in rules.pattern.split("{stem}")]
        if re.fullmatch(".+".join(pieces), base):
            return True
    return bool(_SIDECAR_NAME.search(_stem(base)))


def _check_mask(source: MaskSource, scene_path: str) -> None:
    """A mask that exists must open and have the bands its kind needs."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(source.path) as ds:
            count = ds.count
    except RasterioIOError as exc:
        raise CorruptFileError(
            f"mask {source.path} (sidecar of {scene_path}) cannot be opened: {exc}",
            hint="re-download or regenerate the mask, or move it aside to run without it",
        ) from exc
    need = 6 if source.kind == "udm2" else source.band
    if count < need:
        raise CorruptFileError(
            f"mask {source.path} (sidecar of {scene_path}) has {count} band(s); a {source.kind} "
            f"mask needs at least {need}",
            hint="check the file is the right mask, or set the mask kind/pattern explicitly",
        )


def _mask_from_explicit(mask: Union[str, os.PathLike, MaskSource], rules: Optional[MaskRules]) -> MaskSource:
    if isinstance(mask, MaskSource):
        return mask
    path = os.fspath(mask)
    if not os.path.exists(path) and "://" not in path and not path.startswith("/vsi"):
        raise MissingFileError(
            f"mask file {path} does not exist", hint="check the --mask path"
        )
    stem = _stem(path).lower()
    if rules is not None and rules.kind:
        kind, defaults = rules.kind, GROUNDBREAK_MASK_VALUES
    elif "udm2" in stem:
        kind, defaults = "udm2", {}
    elif stem.endswith("_scl") or stem == "scl":
        kind, defaults = "classes", SCL_MASK_VALUES
    else:
        kind, defaults = "classes", GROUNDBREAK_MASK_VALUES
    return _with_values(path, kind, defaults, rules, "explicit")


# --------------------------------------------------------------------------------------------
# Opening one scene


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


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


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
        when = None
        for tag in _DATE_TAGS:
            if tag in tags:
                when = _date_from_tag(tags[tag])
                if when:
                    break
        date_source = "tiff-tag"
        if when is None:
            when, date_source = date_from_name(path), "filename"
        if when is None:
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


# --------------------------------------------------------------------------------------------
# STAC


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
            out.append(MaskSource(path=href, kind="classes", origin="stac-asset", **SCL_MASK_VALUES))
        elif roles == {"data-mask"} or roles == {"data-mask", "metadata"}:
            out.append(
                MaskSource(path=href, kind="classes", origin="stac-asset", **DATA_MASK_VALUES)
            )
        else:
            out.append(
                MaskSource(path=href, kind="classes", origin="stac-asset", **GROUNDBREAK_MASK_VALUES)
            )
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


# --------------------------------------------------------------------------------------------
# Discovery


def _is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def _is_stac_name(name: str) -> bool:
    return name.lower().endswith(STAC_SUFFIXES)


def _expand(spec: str, rules: Optional[MaskRules]) -> list[str]:
    """A spec -> file paths (rasters or STAC JSON). Sidecar masks are left out of globs/dirs."""
    if os.path.isdir(spec):
        names = sorted(os.listdir(spec))
        paths = [
            os.path.join(spec, n)
            for n in names
            if _is_raster_name(n) and os.path.isfile(os.path.join(spec, n))
        ]
        kept = [p for p in paths if not looks_like_sidecar(p, rules)]
        if len(kept) < len(paths):
            log.debug("%s: %d sidecar mask(s) not taken as scenes", spec, len(paths) - len(kept))
        if not kept:
            raise UsageError(
                f"directory {spec} holds no GeoTIFF scenes (*.tif, *.tiff)",
                hint="point at the folder with the imagery, or list files / a glob / a STAC file",
            )
        return kept
    if _glob.has_magic(spec):
        matches = sorted(p for p in _glob.glob(spec, recursive=True) if os.path.isfile(p))
        kept = [
            p
            for p in matches
            if not p.lower().endswith(_AUXILIARY_SUFFIXES)
            and not (_is_raster_name(p) and looks_like_sidecar(p, rules))
        ]
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


def discover_scenes(
    specs: Sequence[str],
    *,
    band_order: Optional[Union[str, Sequence[str]]] = None,
    date: Optional[Union[str, _dt.date]] = None,
    mask_rules: Optional[MaskRules] = None,
    require_date: bool = True,
) -> list[Scene]:
    """Every scene named by ``specs`` (files, globs, directories, STAC JSON), opened.

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
    expanded = [(spec, path) for spec in map(os.fspath, specs) for path in _expand(spec, mask_rules)]
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
            continue
        scene = open_scene(path, band_order=band_order, date=date, mask_rules=mask_rules,
                           require_date=require_date)
        by_key[key_of(path)] = scene
    if not by_key:
        raise UsageError(
            f"no scene found in {', '.join(map(str, specs))}",
            hint="pass GeoTIFF paths, a glob, a folder or STAC JSON with items",
        )
    return sorted(_unique_ids(by_key), key=lambda s: (s.date, s.scene_id))


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


# --------------------------------------------------------------------------------------------
# Description


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


__all__ = [
    "BAND_ROLES",
    "Scene",
    "band_role",
    "date_from_name",
    "describe_scene",
    "discover_scenes",
    "ground_resolution_m",
    "looks_like_sidecar",
    "open_scene",
    "parse_band_order",
    "parse_date",
    "quick_hash",
    "scene_warnings",
    "select_bands",
]
