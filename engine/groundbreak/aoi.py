"""Areas of interest: read from any OGR vector file, validated, repaired, kept in lon/lat."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyogrio
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

from .errors import CorruptFileError, InvalidGeometryError, MissingFileError, UsageError

log = logging.getLogger(__name__)

_ID_FIELDS = ("aoi_id", "id", "name", "site_id")
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True, slots=True)
class AOI:
    """One polygonal area of interest. ``geometry`` is in EPSG:4326 (lon, lat)."""

    aoi_id: str
    geometry: BaseGeometry
    source: str
    source_crs: str
    repaired: bool = False

    @property
    def area_km2(self) -> float:
        return geodesic_area_km2(self.geometry)


@dataclass(frozen=True, slots=True)
class AOIWarning:
    code: str
    message: str
    hint: str


def geodesic_area_km2(geometry: BaseGeometry) -> float:
    """Area on the WGS84 ellipsoid of a lon/lat geometry, in km²."""
    area, _ = _GEOD.geometry_area_perimeter(geometry)
    return abs(area) / 1e6


def read_aois(
    paths: Sequence[str], *, id_field: Optional[str] = None
) -> Tuple[List[AOI], List[AOIWarning]]:
    """Read every polygon of every file (``path`` or ``path|layername``) into AOIs.

    Invalid polygons are repaired with ``shapely.make_valid`` and a warning; geometries that are
    not polygons, or that stay empty after repair, raise InvalidGeometryError naming the feature.
    """
    if not paths:
        raise UsageError("no AOI given", hint="pass --aoi FILE (GeoPackage, GeoJSON, Shapefile …)")
    aois: List[AOI] = []
    warnings: List[AOIWarning] = []
    seen_ids: set = set()
    for spec in paths:
        for aoi, warning in _read_one(spec, id_field):
            if aoi.aoi_id in seen_ids:
                raise InvalidGeometryError(
                    "AOI id %r occurs twice (in %s)" % (aoi.aoi_id, spec),
                    hint="give every AOI a unique id, or choose another field with --aoi-id-field",
                )
            seen_ids.add(aoi.aoi_id)
            aois.append(aoi)
            if warning is not None:
                warnings.append(warning)
    return aois, warnings


def _read_one(spec: str, id_field: Optional[str]):
    path, _, layer = spec.partition("|")
    layer_name = layer[len("layername="):] if layer.startswith("layername=") else (layer or None)
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise MissingFileError(
            "AOI file not found: %s" % path, hint="check the path; any OGR vector format works"
        )
    try:
        meta, fids, geometries, field_data = pyogrio.raw.read(
            path, layer=layer_name, return_fids=True
        )
    except Exception as exc:  # pyogrio raises several DataSourceError/DataLayerError types
        raise CorruptFileError(
            "cannot read AOI file %s: %s" % (spec, exc),
            hint="open it in QGIS or `ogrinfo` to check it; re-export as GeoPackage if it is damaged",
        ) from None
    if meta.get("geometry_type") in (None, "Unknown") and geometries is None:
        raise InvalidGeometryError(
            "AOI file %s has no geometry column" % spec, hint="AOIs must be polygons"
        )
    n = 0 if geometries is None else len(geometries)
    if n == 0:
        raise InvalidGeometryError(
            "AOI file %s has no features" % spec, hint="draw at least one polygon in it"
        )
    crs_text = meta.get("crs")
    src_crs = _aoi_crs(crs_text, geometries, spec)
    fields = list(meta.get("fields", []))
    id_values = None
    wanted = [id_field] if id_field else [f for f in _ID_FIELDS if f in fields]
    if id_field and id_field not in fields:
        raise UsageError(
            "AOI id field %r not found in %s (fields: %s)" % (id_field, spec, ", ".join(fields) or "none"),
            hint="choose one of the listed fields with --aoi-id-field, or omit it to use feature ids",
        )
    if wanted:
        id_values = field_data[fields.index(wanted[0])]
    to_wgs84 = None
    if not src_crs.equals(CRS.from_epsg(4326)):
        to_wgs84 = Transformer.from_crs(src_crs, CRS.from_epsg(4326), always_xy=True)
    stem = Path(path).stem
    for i in range(n):
        label = "feature %s of %s" % (fids[i], spec)
        wkb = geometries[i]
        if wkb is None:
            raise InvalidGeometryError("%s has no geometry" % label, hint="delete it or draw its polygon")
        geom = shapely.from_wkb(wkb)
        geom = shapely.force_2d(geom)
        if geom.is_empty:
            raise InvalidGeometryError("%s has an empty geometry" % label, hint="delete it or redraw it")
        if geom.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            raise InvalidGeometryError(
                "%s is a %s, but AOIs must be polygons" % (label, geom.geom_type),
                hint="buffer points or lines into polygons first (QGIS: Vector > Geoprocessing > Buffer)",
            )
        warning = None
        repaired = False
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            geom = _polygonal(shapely.make_valid(geom))
            repaired = True
            if geom is None or geom.is_empty or geom.area == 0:
                raise InvalidGeometryError(
                    "%s is invalid (%s) and has no area after repair" % (label, reason),
                    hint="redraw the polygon without self-intersections",
                )
            warning = AOIWarning(
                "aoi_repaired",
                "%s was invalid (%s) and was repaired" % (label, reason),
                "check the repaired outline; fix it in QGIS (Vector > Geometry Tools > Fix Geometries)",
            )
        else:
            geom = _polygonal(geom)
            if geom is None or geom.area == 0:
                raise InvalidGeometryError("%s has no area" % label, hint="AOIs must be polygons with area")
        if to_wgs84 is not None:
            geom = shapely.transform(geom, lambda xy: _transform(to_wgs84, xy))
        if id_values is not None and id_values[i] not in (None, ""):
            aoi_id = str(id_values[i])
        else:
            aoi_id = "%s:%s" % (stem, fids[i])
        yield AOI(aoi_id, geom, spec, src_crs.to_string(), repaired), warning


def _transform(transformer: Transformer, xy):
    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _aoi_crs(crs_text: Optional[str], geometries, spec: str) -> CRS:
    if crs_text:
        try:
            return CRS.from_user_input(crs_text)
        except Exception:
            raise CorruptFileError(
                "AOI file %s has a CRS that PROJ cannot read: %s" % (spec, crs_text),
                hint="re-save it with a standard CRS (e.g. EPSG:4326)",
            ) from None
    # No CRS at all: accept lon/lat-looking coordinates, refuse anything else rather than guess.
    bounds = shapely.total_bounds(shapely.from_wkb([g for g in geometries if g is not None]))
    lonlat = -180 <= bounds[0] and bounds[2] <= 180 and -90 <= bounds[1] and bounds[3] <= 90
    if all(math.isfinite(b) for b in bounds) and lonlat:
        log.warning("AOI %s has no CRS; coordinates look like lon/lat, assuming EPSG:4326", spec)
        return CRS.from_epsg(4326)
    raise InvalidGeometryError(
        "AOI file %s has no CRS and its coordinates are not lon/lat" % spec,
        hint="assign its CRS (QGIS: Layer Properties > Source, or `ogr2ogr -a_srs EPSG:xxxx`)",
    )


def _polygonal(geom: BaseGeometry) -> Optional[BaseGeometry]:
    """Keep only the polygonal parts of a geometry (make_valid may return lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        if not parts:
            return None
        return shapely.union_all(parts)
    return None
