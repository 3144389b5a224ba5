"""IARPA SMART region and site models: export a run's sites, read the program's files.

Format (the SMART heavy-construction dataset's JSON Schema, ``smart.schema.json``): a *site model*
is a GeoJSON FeatureCollection with one ``site`` feature and one ``observation`` feature per image
date; a *region model* has one ``region`` feature and one ``site_summary`` per site. Geometries are
EPSG:4326 lon/lat.

What the export writes, and why (the program's scorer, ``iarpa_smart_metrics``, skips files that
lack these silently):

- files ``region_models/{REGION}.geojson`` and ``site_models/{REGION}_{NNNN}.geojson``: the scorer
  only reads proposal files whose name contains the region id;
- ``site``: ``model_content`` "proposed", ``status`` "system_confirmed" (its default whitelist
  drops other statuses), non-null ``start_date``/``end_date`` (an ongoing site ends at the last
  processed date; ``misc_info.ongoing`` says so), ``score`` (the peak score), ``originator``,
  ``version``, ``mgrs`` (the 100 km MGRS square of the site) and everything else Groundbreak
  knows in ``misc_info``;
- one ``observation`` per processed date with ``observation_date``, ``current_phase``,
  ``is_occluded``, ``is_site_boundary``, ``score`` (omitted when unknown), ``sensor_name`` and
  ``source`` (the scene ids of that date). Phases: a binary construction model gives No Activity
  before the start, Active Construction while active, Post Construction after the end, and
  Unknown on occluded dates (``is_occluded`` "True").

The schema's ``originator`` for proposals is an enum of the program's performer teams; Groundbreak
is not one, so its files validate against the schema with that one enum extended by
:data:`ORIGINATOR` (see :func:`smart_validator`), and nothing else relaxed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import shapely
from pyproj import CRS, Transformer
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from .errors import CorruptFileError, DependencyError, MissingFileError, OutputError, UsageError

log = logging.getLogger(__name__)

#: Groundbreak's ``originator`` code in the files it writes.
ORIGINATOR = "groundbreak"
#: ``sensor_name`` values the schema accepts (anything else is written as null).
SENSOR_NAMES = ("Landsat 8", "Sentinel-2", "WorldView", "Planet")
PHASES = ("No Activity", "Site Preparation", "Active Construction", "Post Construction", "Unknown")
REGION_ID_PATTERN = re.compile(r"^[A-Z]{2}_([RST]\d{3}|C[0-7]\d{2})$")
DEFAULT_REGION_ID = "ZZ_R000"


@dataclass(frozen=True, slots=True)
class SmartOptions:
    """What the export needs to know beyond the run itself."""

    region_id: str = DEFAULT_REGION_ID
    originator: str = ORIGINATOR
    sensor_name: Optional[str] = None
    version: Optional[str] = None  # default: the engine version

    def __post_init__(self) -> None:
        if not REGION_ID_PATTERN.match(self.region_id):
            raise UsageError("SMART region id %r is not of the form CC_R000" % self.region_id,
                             hint="use two capital letters, an underscore, R/S/T and three digits, e.g. US_R001 "
                                  "(the scorer matches proposal files to truth by this id)")
        if self.sensor_name is not None and self.sensor_name not in SENSOR_NAMES:
            raise UsageError("SMART sensor_name %r is not one the schema accepts" % self.sensor_name,
                             hint="use one of %s, or leave it out (null)" % ", ".join(SENSOR_NAMES))
        if self.version is not None and not re.match(r"^\d+\.\d+\.\d+$", self.version):
            raise UsageError("SMART version %r is not X.Y.Z" % self.version, hint="e.g. 1.0.0")


@dataclass(frozen=True, slots=True)
class SmartExport:
    out_dir: Path
    region_model: Path
    site_models: Tuple[Path, ...]


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def mgrs_square(lon: float, lat: float) -> str:
    """The 100 km MGRS grid square (e.g. ``17RMP``) of a point."""
    try:
        import mgrs
    except ImportError:
        raise DependencyError("the SMART export needs the mgrs package", hint="pip install mgrs") from None
    code = mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0)
    return code.decode() if isinstance(code, bytes) else str(code)


def _to_wgs84(epsg: int):
    t = Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4326), always_xy=True)

    def apply(geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, lambda xy: _stack(*t.transform(xy[:, 0], xy[:, 1])))

    return apply


def _stack(x, y):
    import numpy as np

    return np.round(np.column_stack([x, y]), 7)


def _geojson_geometry(geom: BaseGeometry, kind: str) -> Dict[str, Any]:
    """GeoJSON of ``geom`` as a Polygon (the convex hull of several parts) or MultiPolygon,
    exterior rings counter-clockwise (RFC 7946)."""
    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    polys = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and not g.is_empty]
    if kind == "Polygon":
        out = polys[0] if len(polys) == 1 else shapely.convex_hull(shapely.MultiPolygon(polys))
    else:
        out = shapely.MultiPolygon(polys)
    return dict(mapping(shapely.orient_polygons(out)))


def export_smart(gpkg: Path, out_dir: Path, options: SmartOptions = SmartOptions(), *,
                 aoi_id: Optional[str] = None) -> SmartExport:
    """Write the region model and one site model per site of a run GeoPackage's timeline."""
    from . import __version__
    from .timeline import gpkg_epsg, read_site_observations, read_sites

    sites = read_sites(gpkg, aoi_id=aoi_id)
    observations = read_site_observations(gpkg, aoi_id=aoi_id)
    epsg = gpkg_epsg(gpkg)
    dates, region_geom, params, model = _run_context(gpkg, aoi_id, epsg)
    to4326 = _to_wgs84(epsg)
    version = options.version or (__version__ if re.match(r"^\d+\.\d+\.\d+$", __version__) else "0.0.0")
    region = options.region_id
    out_dir = Path(out_dir)
    site_dir = out_dir / "site_models"
    region_dir = out_dir / "region_models"
    _check_replaceable(site_dir, region, options.originator)
    region_wgs = to4326(region_geom)
    c = region_wgs.centroid
    region_mgrs = mgrs_square(c.x, c.y)
    docs: List[Tuple[str, Dict[str, Any]]] = []
    summaries = []
    for n, site in enumerate(sites, start=1):
        smart_id = "%s_%04d" % (region, n)
        geom = to4326(site["geometry"])
        gc = geom.centroid
        end = site["end_date"] or site["temporal_end"]
        props: Dict[str, Any] = {
            "type": "site", "region_id": region, "site_id": smart_id, "version": version,
            "mgrs": mgrs_square(gc.x, gc.y), "status": "system_confirmed", "model_content": "proposed",
            "score": _unit(site["peak_score"]), "start_date": site["start_date"], "end_date": end,
            "originator": options.originator,
            "misc_info": {
                "groundbreak_site_id": site["site_id"], "aoi_id": site["aoi_id"], "ongoing": bool(site["ongoing"]),
                "last_active_date": site["last_active_date"], "peak_score": site["peak_score"],
                "mean_score": site["mean_score"], "supporting_dates": site["supporting_dates"],
                "unknown_dates": site["unknown_dates"], "chips": site["chips"], "area_m2": site["area_m2"],
                "model": model, "timeline_params": params,
            },
        }
        feats = [{"type": "Feature", "properties": props, "geometry": _geojson_geometry(geom, "Polygon")}]
        for obs in observations.get(str(site["site_id"]), []):
            op: Dict[str, Any] = {
                "type": "observation", "observation_date": obs["date"], "source": obs["source"] or None,
                "sensor_name": options.sensor_name, "current_phase": obs["phase"],
                "is_occluded": "True" if obs["occluded"] else "False", "is_site_boundary": "True",
                "misc_info": {"status": obs["status"], "chips_known": obs["chips_known"]},
            }
            if obs["score"] is not None:
                op["score"] = _unit(obs["score"])
            feats.append({"type": "Feature", "properties": op,
                          "geometry": _geojson_geometry(to4326(obs["geometry"]), "MultiPolygon")})
        docs.append((smart_id, {"type": "FeatureCollection", "features": feats}))
        summaries.append({"type": "Feature", "properties": {
            "type": "site_summary", "site_id": smart_id, "version": version, "mgrs": props["mgrs"],
            "status": "system_confirmed", "model_content": "proposed", "score": props["score"],
            "start_date": props["start_date"], "end_date": end, "originator": options.originator,
        }, "geometry": feats[0]["geometry"]})
    region_doc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "type": "region", "region_id": region, "version": version, "mgrs": region_mgrs,
        "start_date": dates[0] if dates else None, "end_date": dates[-1] if dates else None,
        "originator": options.originator, "model_content": "proposed",
        "comments": "Groundbreak %s proposals from %s" % (__version__, Path(gpkg).name),
    }, "geometry": _geojson_geometry(region_wgs, "Polygon")}] + summaries}
    if not dates:
        raise UsageError("%s has no processed dates: nothing to export" % gpkg, hint="run the detection first")
    paths = _write_all(out_dir, region, region_doc, docs, site_dir, region_dir, options.originator)
    log.info("SMART export: %d site model(s) and region model %s in %s", len(docs), region, out_dir)
    return SmartExport(out_dir, paths[0], tuple(paths[1:]))


def _unit(v: Any) -> float:
    return float(min(1.0, max(0.0, float(v))))


def _run_context(gpkg: Path, aoi_id: Optional[str], epsg: int) -> Tuple[List[str], BaseGeometry, Any, Any]:
    """Processed dates, the region polygon (the planned chips' extent), timeline parameters and
    the model provenance of a run GeoPackage."""
    import sqlite3

    from .store import connect
    from .timeline import _aoi_filter

    conn = connect(gpkg)
    try:
        where, args = _aoi_filter(aoi_id)
        dates = [r[0] for r in conn.execute("SELECT DISTINCT date FROM chips WHERE 1=1%s ORDER BY date" % where, args)]
        if aoi_id is None:
            ext = conn.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name='chips'"
                               ).fetchone()
        else:
            ext = None
        if ext is None or any(v is None for v in ext):
            ext = conn.execute("SELECT MIN(ST_MinX(geom)), MIN(ST_MinY(geom)), MAX(ST_MaxX(geom)), "
                               "MAX(ST_MaxY(geom)) FROM chips WHERE 1=1%s" % where, args).fetchone()
        row = conn.execute("SELECT params FROM timeline_runs ORDER BY id DESC LIMIT 1").fetchone()
        params = json.loads(row[0]) if row else None
        run = conn.execute("SELECT inputs FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        model = json.loads(run[0]).get("model") if run and run[0] else None
    except (sqlite3.Error, ValueError) as exc:
        raise CorruptFileError("cannot read the run context of %s: %s" % (gpkg, exc),
                               hint="build the timeline first: groundbreak timeline --in %s" % gpkg) from None
    finally:
        conn.close()
    if ext is None or any(v is None for v in ext):
        raise UsageError("%s has no planned chips: nothing to export" % gpkg, hint="run the detection first")
    return dates, shapely.box(*ext), params, model


def _check_replaceable(site_dir: Path, region: str, originator: str) -> None:
    """Refuse to overwrite site models of this region that someone else wrote (e.g. truth)."""
    if not site_dir.is_dir():
        return
    for path in sorted(site_dir.glob("%s_*.geojson" % region)):
        try:
            doc = json.loads(path.read_text())
            site = next(f for f in doc["features"] if f["properties"].get("type") == "site")
            ours = site["properties"].get("originator") == originator and \
                site["properties"].get("model_content") == "proposed"
        except (OSError, ValueError, KeyError, StopIteration, TypeError, AttributeError):
            ours = False
        if not ours:
            raise OutputError("%s holds a site model not written by %s (%s)" % (site_dir, originator, path.name),
                              hint="choose an empty --smart folder (never a truth folder)")


def _write_all(out_dir: Path, region: str, region_doc: Dict[str, Any], docs: Sequence[Tuple[str, Dict[str, Any]]],
               site_dir: Path, region_dir: Path, originator: str) -> List[Path]:
    """Write into a fresh folder beside the target, then swap the files in: an interrupted export
    leaves the previous one whole."""
    tmp = out_dir / (".smart-%d.partial" % os.getpid())
    try:
        (tmp / "site_models").mkdir(parents=True, exist_ok=True)
        (tmp / "region_models").mkdir(parents=True, exist_ok=True)
        (tmp / "region_models" / ("%s.geojson" % region)).write_text(json.dumps(region_doc, indent=1) + "\n")
        for smart_id, doc in docs:
            (tmp / "site_models" / ("%s.geojson" % smart_id)).write_text(json.dumps(doc, indent=1) + "\n")
        site_dir.mkdir(parents=True, exist_ok=True)
        region_dir.mkdir(parents=True, exist_ok=True)
        for old in site_dir.glob("%s_*.geojson" % region):  # ours (checked): an earlier export
            old.unlink()
        paths = [region_dir / ("%s.geojson" % region)]
        os.replace(tmp / "region_models" / paths[0].name, paths[0])
        for smart_id, _ in docs:
            dst = site_dir / ("%s.geojson" % smart_id)
            os.replace(tmp / "site_models" / dst.name, dst)
            paths.append(dst)
        return paths
    except OSError as exc:
        raise OutputError("cannot write SMART files into %s: %s" % (out_dir, exc),
                          hint="choose a writable --smart folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def smart_validator(schema: Path, *, originators: Iterable[str] = (ORIGINATOR,)) -> Any:
    """A jsonschema validator for the SMART schema with only the performer ``originator`` enum
    extended by ``originators`` (the program lists its own teams there)."""
    try:
        import jsonschema
    except ImportError:
        raise DependencyError("validating SMART files needs jsonschema", hint="pip install jsonschema") from None
    try:
        doc = json.loads(Path(schema).read_text())
        enum = doc["$defs"]["_performer_originators"]["enum"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptFileError("%s is not the SMART JSON Schema (%s)" % (schema, exc),
                               hint="use smart.schema.json from the SMART dataset") from None
    enum.extend(o for o in originators if o not in enum)
    cls = jsonschema.validators.validator_for(doc)
    return cls(doc)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmartObservation:
    date: Optional[str]
    phases: Tuple[str, ...]  # one per polygon when subsites differ ("Active Construction, Post Construction")
    occluded: Optional[bool]
    boundary: Tuple[bool, ...]
    score: Optional[float]
    source: Optional[str]
    geometry: BaseGeometry  # EPSG:4326


@dataclass(frozen=True, slots=True)
class SmartSite:
    site_id: str
    region_id: Optional[str]
    status: str
    start_date: Optional[str]
    end_date: Optional[str]
    score: float  # null in a file reads as 1.0 (the program's default)
    originator: Optional[str]
    model_content: Optional[str]
    geometry: BaseGeometry  # EPSG:4326
    observations: Tuple[SmartObservation, ...]
    path: Path


@dataclass(frozen=True, slots=True)
class SmartRegion:
    region_id: str
    start_date: Optional[str]
    end_date: Optional[str]
    geometry: BaseGeometry
    path: Path


def _chain(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def _bool(value: Any) -> Optional[bool]:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return any(p == "True" for p in _chain(value))


def _load(path: Path) -> Dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
            raise ValueError("not a GeoJSON FeatureCollection")
        return doc
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptFileError("%s is not a SMART GeoJSON file: %s" % (path, exc),
                               hint="give SMART site/region model files (GeoJSON FeatureCollections)") from None


def read_site_model(path: Path) -> SmartSite:
    """One SMART site model (truth or proposal)."""
    path = Path(path)
    doc = _load(path)
    sites = [f for f in doc["features"] if (f.get("properties") or {}).get("type") == "site"]
    if len(sites) != 1:
        raise CorruptFileError("%s has %d 'site' features, not one" % (path, len(sites)),
                               hint="a site model has exactly one feature with properties.type = 'site'")
    p = sites[0]["properties"]
    try:
        observations = []
        for f in doc["features"]:
            op = f.get("properties") or {}
            if op.get("type") != "observation":
                continue
            observations.append(SmartObservation(
                op.get("observation_date"), _chain(op.get("current_phase")), _bool(op.get("is_occluded")),
                tuple(b == "True" for b in _chain(op.get("is_site_boundary"))),
                None if op.get("score") is None else float(op["score"]), op.get("source"), shape(f["geometry"])))
        observations.sort(key=lambda o: o.date or "")
        return SmartSite(
            str(p["site_id"]), p.get("region_id"), str(p.get("status")), p.get("start_date"), p.get("end_date"),
            1.0 if p.get("score") is None else float(p["score"]), p.get("originator"), p.get("model_content"),
            shape(sites[0]["geometry"]), tuple(observations), path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptFileError("%s: a feature is malformed (%s)" % (path, exc),
                               hint="check it against the SMART site-model schema") from None


def read_region_model(path: Path) -> SmartRegion:
    path = Path(path)
    doc = _load(path)
    regions = [f for f in doc["features"] if (f.get("properties") or {}).get("type") == "region"]
    if len(regions) != 1:
        raise CorruptFileError("%s has %d 'region' features, not one" % (path, len(regions)),
                               hint="a region model has exactly one feature with properties.type = 'region'")
    p = regions[0]["properties"]
    return SmartRegion(str(p.get("region_id")), p.get("start_date"), p.get("end_date"),
                       shape(regions[0]["geometry"]), path)


def site_model_paths(folder: Path) -> List[Path]:
    """The site-model files of a SMART folder (``folder/site_models/*.geojson`` or ``folder/*.geojson``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError("no SMART folder at %s" % folder, hint="give a folder of site models")
    sub = folder / "site_models"
    paths = sorted((sub if sub.is_dir() else folder).glob("*.geojson"))
    if not paths:
        raise MissingFileError("no site models (*.geojson) in %s" % (sub if sub.is_dir() else folder),
                               hint="give the folder holding site_models/ or the site-model files")
    return paths


def read_site_models(folder: Path, *, region_id: Optional[str] = None) -> List[SmartSite]:
    """Every site model of a folder (only those whose file name contains ``region_id``, if given,
    as the program's scorer does)."""
    return [read_site_model(p) for p in site_model_paths(folder) if region_id is None or region_id in p.name]


def find_region_model(folder: Path) -> Optional[SmartRegion]:
    """The one region model of a SMART folder (``region_models/*.geojson``), if there is exactly one."""
    folder = Path(folder)
    for base in (folder, folder.parent):
        paths = sorted((base / "region_models").glob("*.geojson")) if (base / "region_models").is_dir() else []
        if len(paths) == 1:
            return read_region_model(paths[0])
    return None
