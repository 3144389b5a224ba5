"""AOIs from any OGR vector file: formats, CRSs, ids, repairs and refusals."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import shapely
from conftest import ORIGIN, write_aoi
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box

from groundbreak.aoi import geodesic_area_km2, read_aois
from groundbreak.errors import CorruptFileError, InvalidGeometryError, MissingFileError, UsageError

X0, Y1 = ORIGIN
SQUARE = box(X0, Y1 - 1000, X0 + 1000, Y1)  # 1 km² in UTM 14N


def _to_lonlat(geom):
    t = Transformer.from_crs("EPSG:32614", "EPSG:4326", always_xy=True)
    return shapely.transform(shapely.segmentize(geom, 10.0),
                             lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


@pytest.mark.parametrize("name", ["aoi.gpkg", "aoi.geojson", "aoi.shp"])
def test_formats_read_the_same_area(tmp_path, name):
    path = write_aoi(tmp_path / name, [SQUARE], ids=["site-1"])
    aois, warnings = read_aois([str(path)])
    assert warnings == []
    assert [a.aoi_id for a in aois] == ["site-1"]
    assert aois[0].area_km2 == pytest.approx(1.0, rel=2e-3)  # UTM scale error near the zone centre
    lon, lat = aois[0].geometry.centroid.coords[0]
    assert -100 < lon < -98 and 46 < lat < 48  # kept in lon/lat
    assert "32614" in aois[0].source_crs


def test_lonlat_and_utm_files_describe_the_same_ground(tmp_path):
    utm = read_aois([str(write_aoi(tmp_path / "utm.geojson", [SQUARE]))])[0][0]
    ll = read_aois([str(write_aoi(tmp_path / "ll.gpkg", [_to_lonlat(SQUARE)], crs="EPSG:4326"))])[0][0]
    assert ll.geometry.symmetric_difference(utm.geometry).area / utm.geometry.area < 1e-4


def test_multiple_features_and_files_with_ids(tmp_path):
    a = write_aoi(tmp_path / "a.gpkg", [SQUARE, shapely.affinity.translate(SQUARE, 2000)], ids=["north", "east"])
    b = write_aoi(tmp_path / "b.geojson", [shapely.affinity.translate(SQUARE, 0, -3000)])  # no id field
    aois, _ = read_aois([str(a), str(b)])
    ids = [x.aoi_id for x in aois]
    assert ids[:2] == ["north", "east"]
    # Without an id field the feature id is used, prefixed with the file's stem so it stays unique.
    assert len(ids) == 3 and ids[2].startswith("b:")


def test_id_field_option(tmp_path):
    path = write_aoi(tmp_path / "a.gpkg", [SQUARE], ids=["x"])
    assert read_aois([str(path)], id_field="aoi_id")[0][0].aoi_id == "x"
    with pytest.raises(UsageError, match="not found"):
        read_aois([str(path)], id_field="nope")


def test_duplicate_ids_are_refused(tmp_path):
    path = write_aoi(tmp_path / "a.gpkg", [SQUARE, shapely.affinity.translate(SQUARE, 2000)], ids=["same", "same"])
    with pytest.raises(InvalidGeometryError, match="twice") as info:
        read_aois([str(path)])
    assert info.value.hint


def test_bow_tie_is_repaired_with_a_warning(tmp_path, caplog):
    bow = Polygon([(X0, Y1), (X0 + 1000, Y1 - 1000), (X0 + 1000, Y1), (X0, Y1 - 1000)])
    assert not bow.is_valid
    path = write_aoi(tmp_path / "bow.geojson", [bow], ids=["bow"])
    aois, warnings = read_aois([str(path)])
    assert len(aois) == 1 and aois[0].repaired
    assert aois[0].geometry.is_valid
    assert aois[0].area_km2 == pytest.approx(0.5, rel=5e-3)  # two triangles of 0.25 km²
    assert [w.code for w in warnings] == ["aoi_repaired"]
    assert "Self-intersection" in warnings[0].message and warnings[0].hint


@pytest.mark.parametrize("geom", [Point(X0, Y1), LineString([(X0, Y1), (X0 + 100, Y1 - 100)])])
def test_points_and_lines_are_rejected(tmp_path, geom):
    path = write_aoi(tmp_path / "bad.geojson", [geom])
    with pytest.raises(InvalidGeometryError, match="must be polygons") as info:
        read_aois([str(path)])
    assert "buffer" in info.value.hint.lower()


def test_zero_area_polygon_is_rejected(tmp_path):
    flat = Polygon([(X0, Y1), (X0 + 100, Y1), (X0 + 200, Y1), (X0, Y1)])
    path = write_aoi(tmp_path / "flat.geojson", [flat])
    with pytest.raises(InvalidGeometryError, match="area"):
        read_aois([str(path)])


def test_empty_file(tmp_path):
    path = tmp_path / "empty.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InvalidGeometryError, match="no features"):
        read_aois([str(path)])


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="not found") as info:
        read_aois([str(tmp_path / "nope.gpkg")])
    assert info.value.hint


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.gpkg"
    path.write_bytes(b"not a geopackage at all" * 10)
    with pytest.raises(CorruptFileError):
        read_aois([str(path)])


def test_no_aoi_is_a_usage_error():
    with pytest.raises(UsageError):
        read_aois([])


def _shapefile_without_crs(path, coords):
    # A shapefile without its .prj is the common real case of a vector file with no CRS.
    import pyogrio
    path_shp = path.with_suffix(".shp")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio warns that there is no CRS: the point
        pyogrio.raw.write(str(path_shp), np.array([shapely.to_wkb(Polygon(coords))], dtype=object), [], fields=[],
                          crs=None, geometry_type="Polygon")
    return path_shp


def test_no_crs_with_lonlat_coordinates_is_assumed_wgs84(tmp_path, caplog):
    path = _shapefile_without_crs(tmp_path / "ll", [(-99.2, 47.0), (-99.1, 47.0), (-99.1, 47.05), (-99.2, 47.05)])
    with caplog.at_level(logging.WARNING, logger="groundbreak"):
        aois, _ = read_aois([str(path)])
    assert aois[0].source_crs.endswith("4326")
    assert "no CRS" in caplog.text


def test_no_crs_with_projected_coordinates_is_refused(tmp_path):
    path = _shapefile_without_crs(tmp_path / "utm", list(SQUARE.exterior.coords))
    with pytest.raises(InvalidGeometryError, match="no CRS") as info:
        read_aois([str(path)])
    assert "ogr2ogr" in info.value.hint or "CRS" in info.value.hint


def test_geodesic_area_of_one_degree_cell_at_equator():
    assert geodesic_area_km2(box(0, 0, 1, 1)) == pytest.approx(12308.8, rel=1e-3)


def test_a_layer_of_a_multi_layer_geopackage(tmp_path):
    import pyogrio

    path = tmp_path / "project.gpkg"
    for layer, geom in (("roads", SQUARE), ("sites", shapely.affinity.translate(SQUARE, 5000))):
        pyogrio.raw.write(str(path), np.array([shapely.to_wkb(geom)], dtype=object), [np.array([layer], dtype=object)],
                          fields=["name"], crs="EPSG:32614", geometry_type="Polygon", layer=layer, driver="GPKG",
                          append=path.exists())
    aois, _ = read_aois(["%s|layername=sites" % path])
    assert [a.aoi_id for a in aois] == ["sites"]  # the "name" field is an id field
    assert aois[0].geometry.centroid.x > read_aois(["%s|layername=roads" % path])[0][0].geometry.centroid.x
