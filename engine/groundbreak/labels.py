"""Training and evaluation labels: polygons that say "construction here, on these dates" (or not).

Three sources, one value type (:class:`LabelPolygon`, geometry in EPSG:4326):

- plain polygon layers (GeoPackage, GeoJSON, any OGR vector) with a ``label`` field (1/0, or
  "construction"/"background", or -1/"ignore") and either ``date`` or ``start_date``/``end_date``.
  The QGIS plugin's Review -> Export (layer ``labels``: ``label``, ``date``, ``chip_id``,
  ``scene_id``, ``source``) and a generated world's ``labels.gpkg`` are such layers;
- IARPA SMART site models (GeoJSON with one ``site`` feature and ``observation`` features): an
  observation's ``current_phase`` holds from its date until the next observation's date. Site
  Preparation and Active Construction are positive, No Activity and Post Construction negative,
  Unknown ignored. A ``negative`` site (a look-alike) is negative over its whole date range.

A polygon applies to a scene when the scene's date falls in ``[start, end]`` (both inclusive).
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from .errors import MissingFileError, UsageError

log = logging.getLogger(__name__)

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1

#: SMART phases -> label value. A multi-phase observation ("Post Construction, Active
#: Construction") is positive when any part is, ignored when every part is Unknown.
SMART_PHASES: Dict[str, int] = {
    "Site Preparation": POSITIVE,
    "Active Construction": POSITIVE,
    "No Activity": NEGATIVE,
    "Post Construction": NEGATIVE,
    "Unknown": IGNORE,
}
_LABEL_WORDS = {
    "1": POSITIVE, "construction": POSITIVE, "positive": POSITIVE, "true": POSITIVE, "yes": POSITIVE,
    "0": NEGATIVE, "background": NEGATIVE, "negative": NEGATIVE, "false": NEGATIVE, "no": NEGATIVE,
    "-1": IGNORE, "ignore": IGNORE, "unknown": IGNORE,
}
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml", ".gml", ".sqlite")
_FAR_FUTURE = _dt.date(9999, 12, 31)


class LabelError(UsageError):
    """A label file is missing a field or holds a value that cannot be read."""

    code = "labels_invalid"


@dataclass(frozen=True, slots=True)
class LabelPolygon:
    """One labelled polygon (EPSG:4326) valid from ``start`` to ``end`` (inclusive)."""

    geometry: BaseGeometry
    value: int  # POSITIVE, NEGATIVE or IGNORE
    start: _dt.date
    end: _dt.date
    place: str  # a site id when the source has one ("" otherwise): used to hold places out
    source: str  # the file it came from

    def applies_to(self, date: _dt.date) -> bool:
        return self.start <= date <= self.end


@dataclass(frozen=True, slots=True)
class LabelSet:
    polygons: Tuple[LabelPolygon, ...]
    sources: Tuple[str, ...]

    def on(self, date: _dt.date) -> List[LabelPolygon]:
        """Polygons that apply on ``date``."""
        return [p for p in self.polygons if p.applies_to(date)]

    def counts(self) -> Dict[str, int]:
        values = [p.value for p in self.polygons]
        return {"positive": values.count(POSITIVE), "negative": values.count(NEGATIVE),
                "ignore": values.count(IGNORE)}

    @property
    def dates(self) -> Tuple[_dt.date, ...]:
        return tuple(sorted({p.start for p in self.polygons}))

    def __len__(self) -> int:
        return len(self.polygons)


def read_labels(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> LabelSet:
    """Read every label file named by ``paths`` (files, folders of files, or globs)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = _expand(paths)
    polygons: List[LabelPolygon] = []
    for path in files:
        polygons.extend(read_label_file(path))
    log.info("read %d label polygon(s) from %d file(s)", len(polygons), len(files))
    return LabelSet(tuple(polygons), tuple(str(f) for f in files))


def read_label_file(path: "str | os.PathLike[str]") -> List[LabelPolygon]:
    """Polygons of one file: a SMART site model, or a polygon layer with label and date fields."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"label file not found: {path}", hint="check the --labels path")
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LabelError(f"{path}: not valid JSON ({exc})", hint="fix or re-export the file") from None
        if _is_smart_site_model(doc):
            return _smart_polygons(doc, path)
    return _layer_polygons(path)


# -- SMART site models --------------------------------------------------------------------------------
def _is_smart_site_model(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        return False
    return any((f.get("properties") or {}).get("type") == "site" for f in doc.get("features") or [])


def smart_phase_value(phase: Optional[str]) -> Optional[int]:
    """The label value of a SMART ``current_phase`` (None when there is no phase)."""
    if phase is None or not str(phase).strip():
        return None
    parts = [p.strip() for p in str(phase).split(",") if p.strip()]
    values = []
    for part in parts:
        if part not in SMART_PHASES:
            raise LabelError(f"unknown SMART phase {part!r}",
                             hint="phases are: " + ", ".join(SMART_PHASES))
        values.append(SMART_PHASES[part])
    if POSITIVE in values:
        return POSITIVE
    if NEGATIVE in values:
        return NEGATIVE
    return IGNORE


def _smart_polygons(doc: Dict[str, Any], path: Path) -> List[LabelPolygon]:
    features = doc.get("features") or []
    site = next(f for f in features if (f.get("properties") or {}).get("type") == "site")
    sp = site["properties"]
    site_id = str(sp.get("site_id") or path.stem)
    status = str(sp.get("status") or "")
    observations = []
    for i, f in enumerate(features):
        props = f.get("properties") or {}
        if props.get("type") != "observation":
            continue
        date = _date(props.get("observation_date"), path, "observation_date", f"observation {i}")
        try:
            value = smart_phase_value(props.get("current_phase"))
        except LabelError as exc:
            raise LabelError(f"{path}: observation {i} ({date}): {exc.message}", hint=exc.hint) from None
        observations.append((date, value, _geometry(f, path, f"observation {i}")))
    observations.sort(key=lambda o: o[0])
    out: List[LabelPolygon] = []
    if status == "negative" or (not observations and status.startswith("negative")):
        start = _optional_date(sp.get("start_date"), path, "start_date", "site feature") or _dt.date.min
        end = _optional_date(sp.get("end_date"), path, "end_date", "site feature") or _FAR_FUTURE
        return [LabelPolygon(_geometry(site, path, "site feature"), NEGATIVE, start, end, site_id, str(path))]
    if not observations:
        raise LabelError(f"{path}: SMART site {site_id} has no observation features",
                         hint="a positive site model needs observations with current_phase and observation_date")
    for k, (date, value, geom) in enumerate(observations):
        if value is None:
            continue  # no phase recorded: neither evidence for nor against
        nxt = observations[k + 1][0] - _dt.timedelta(days=1) if k + 1 < len(observations) else date
        out.append(LabelPolygon(geom, value, date, max(date, nxt), site_id, str(path)))
    return out


# -- plain polygon layers -------------------------------------------------------------------------------
def _layer_polygons(path: Path) -> List[LabelPolygon]:
    import pyogrio
    import pyogrio.raw

    try:
        layers = [name for name, _ in pyogrio.list_layers(str(path))]
    except Exception as exc:  # pyogrio raises its own DataSourceError for unreadable files
        raise LabelError(f"{path}: not a readable vector file ({exc})",
                         hint="labels must be a GeoPackage, GeoJSON or other OGR vector file") from None
    layer = "labels" if "labels" in layers else (layers[0] if layers else None)
    if layer is None:
        raise LabelError(f"{path}: no layers", hint="export the labels again")
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer=layer)
    fields = [str(f) for f in meta["fields"]]
    lower = {f.lower(): i for i, f in enumerate(fields)}
    where = f"{path} (layer {layer!r})"
    if "label" not in lower:
        raise LabelError(f"{where} has no 'label' field (fields: {', '.join(fields) or 'none'})",
                         hint="add a 'label' field: 1 or 'construction' for positives, 0 or 'background' for negatives")
    has_date = "date" in lower
    has_range = "start_date" in lower or "end_date" in lower
    if not has_date and not has_range:
        raise LabelError(f"{where} has no 'date' field (nor 'start_date'/'end_date')",
                         hint="add a 'date' (YYYY-MM-DD) per polygon, or a 'start_date' and 'end_date' range")
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    if crs is None:
        raise LabelError(f"{where} has no CRS", hint="save the labels with a coordinate reference system")
    fields_read = ("label", "date", "start_date", "end_date", "site_id", "chip_id")
    col: Dict[str, Any] = {name: values[lower[name]] for name in fields_read if name in lower}
    geometries = shapely.from_wkb(geoms)
    geometries = _to_lonlat(geometries, crs)
    out: List[LabelPolygon] = []
    for i, geom in enumerate(geometries):
        what = f"feature {i + 1}"
        if geom is None or geom.is_empty:
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise LabelError(f"{where}: {what} is a {geom.geom_type}, not a polygon",
                             hint="labels must be polygons (draw areas, not points or lines)")
        value = _label_value(col["label"][i], where, what)
        start, end = _feature_dates(col, i, has_date, path, where, what)
        place = next((str(col[key][i]) for key in ("site_id", "chip_id") if key in col and not _blank(col[key][i])),
                     "")
        out.append(LabelPolygon(geom, value, start, end, place, str(path)))
    return out


def _feature_dates(col: Mapping[str, Any], i: int, has_date: bool, path: Path, where: str,
                   what: str) -> Tuple[_dt.date, _dt.date]:
    """(start, end) of feature ``i``: its ``date``, else its ``start_date``..``end_date`` (open-ended)."""
    if has_date and not _blank(col["date"][i]):
        day = _date(col["date"][i], path, "date", what)
        return day, day
    s = col.get("start_date")
    e = col.get("end_date")
    if s is None or _blank(s[i]):
        raise LabelError(f"{where}: {what} has no date (field 'date' or 'start_date' is empty)",
                         hint="give every polygon a 'date' or a 'start_date'/'end_date' range")
    start = _date(s[i], path, "start_date", what)
    end = _date(e[i], path, "end_date", what) if e is not None and not _blank(e[i]) else _FAR_FUTURE
    if end < start:
        raise LabelError(f"{where}: {what} ends ({end}) before it starts ({start})",
                         hint="swap start_date and end_date")
    return start, end


def _to_lonlat(geometries: np.ndarray, crs: CRS) -> np.ndarray:
    if crs.equals(CRS.from_epsg(4326)):
        return geometries
    from pyproj import Transformer

    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.transform(geometries, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _label_value(raw: Any, where: str, what: str) -> int:
    key = str(raw).strip().lower()
    if key.endswith(".0"):
        key = key[:-2]
    if key in _LABEL_WORDS:
        return _LABEL_WORDS[key]
    raise LabelError(f"{where}: {what} has label {raw!r}",
                     hint="use 1/'construction' (positive), 0/'background' (negative) or -1/'ignore'")


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    if isinstance(value, np.datetime64) and np.isnat(value):
        return True
    return isinstance(value, str) and not value.strip()


def _date(value: Any, path: Path, field: str, what: str) -> _dt.date:
    """A required date (a LabelError naming the file, feature and field when it is missing or unreadable)."""
    date = _optional_date(value, path, field, what)
    if date is None:
        raise LabelError(f"{path}: {what} has no {field!r}", hint=f"give {field} as YYYY-MM-DD")
    return date


def _optional_date(value: Any, path: Path, field: str, what: str) -> Optional[_dt.date]:
    """A date, or None when the value is blank (a LabelError when it is not a date)."""
    if _blank(value):
        return None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    text = str(value).strip()
    try:
        return _dt.date.fromisoformat(text[:10])
    except ValueError:
        raise LabelError(f"{path}: {what} has {field} {value!r}, which is not a date",
                         hint=f"write {field} as YYYY-MM-DD") from None


def _geometry(feature: Dict[str, Any], path: Path, what: str) -> BaseGeometry:
    try:
        geom = shape(feature["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LabelError(f"{path}: {what} has no usable geometry ({exc})",
                         hint="SMART site models store polygons in EPSG:4326") from None
    return geom if geom.is_valid else shapely.make_valid(geom)


def _expand(paths: Iterable["str | os.PathLike[str]"]) -> List[Path]:
    out: List[Path] = []
    for spec in paths:
        text = os.fspath(spec)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise MissingFileError(f"no label files match {text}", hint="check the pattern (quote it)")
            out.extend(Path(h) for h in matches)
        elif os.path.isdir(text):
            hits = sorted(p for p in Path(text).iterdir() if p.suffix.lower() in _VECTOR_SUFFIXES)
            if not hits:
                raise MissingFileError(f"no label files (.gpkg/.geojson/...) in folder {text}",
                                       hint="point --labels at the files or a folder that holds them")
            out.extend(hits)
        else:
            out.append(Path(text))
    if not out:
        raise UsageError("no label files given", hint="pass --labels FILE")
    return out
