"""Sidecar quality masks next to a scene, found by file name (decoding is in ``groundbreak.masks``)."""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Dict, Mapping, Optional, Tuple, Union

from groundbreak.errors import (
    CorruptFileError,
    MissingFileError,
)
from groundbreak.masks import (
    GROUNDBREAK_MASK_VALUES,
    SCL_MASK_VALUES,
    MaskRules,
    MaskSource,
    MaskValues,
)

from .record import RASTER_SUFFIXES, _stem

log = logging.getLogger(__name__)

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
    if kind != "classes":
        return MaskSource(path=path, kind=kind, origin=origin)
    values: Dict[str, Tuple[int, ...]] = dict(defaults)
    if rules is not None:
        for key in ("cloud_values", "shadow_values", "nodata_values"):
            override = getattr(rules, key)
            if override is not None:
                values[key] = tuple(int(v) for v in override)
    return MaskSource.of_classes(path, values, origin=origin)


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
    defaults: MaskValues
    if rules is not None and rules.kind:
        kind, defaults = rules.kind, GROUNDBREAK_MASK_VALUES
    elif "udm2" in stem:
        kind, defaults = "udm2", {}
    elif stem.endswith("_scl") or stem == "scl":
        kind, defaults = "classes", SCL_MASK_VALUES
    else:
        kind, defaults = "classes", GROUNDBREAK_MASK_VALUES
    return _with_values(path, kind, defaults, rules, "explicit")
