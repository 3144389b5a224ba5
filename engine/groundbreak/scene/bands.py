"""Band roles: what each band of a scene is (red, green, blue, nir, alpha), and the model's bands in a scene."""

from __future__ import annotations

import logging
import os
import re
from typing import Optional, Sequence, Tuple, Union

from groundbreak.errors import (
    BandMismatchError,
    UsageError,
)

from .record import Scene

log = logging.getLogger(__name__)

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
