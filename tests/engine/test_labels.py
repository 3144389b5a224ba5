"""Label reading: SMART site models (phases over time), polygon layers, the plugin's export, errors."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box, mapping

from groundbreak.errors import GroundbreakError, MissingFileError
from groundbreak.labels import IGNORE, NEGATIVE, POSITIVE, LabelError, read_label_file, read_labels, smart_phase_value

D = _dt.date
SITE = box(-81.60, 30.30, -81.59, 30.31)


def _smart(path: Path, status: str, observations, *, start="2016-01-01", end="2017-06-01") -> Path:
    feats = [{"type": "Feature", "geometry": mapping(SITE), "properties": {
        "type": "site", "region_id": "US_R001", "site_id": path.stem, "version": "2.0.0", "status": status,
        "start_date": start, "end_date": end, "model_content": "annotation", "originator": "te"}}]
    for date, phase in observations:
        feats.append({"type": "Feature", "geometry": mapping(shapely.MultiPolygon([SITE])), "properties": {
            "type": "observation", "observation_date": date, "current_phase": phase, "source": "x",
            "sensor_name": "Sentinel-2", "is_occluded": "False", "is_site_boundary": "True", "score": 1.0}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _layer(path: Path, fields: dict, geoms, *, crs="EPSG:32614", layer=None) -> Path:
    from pyogrio.raw import write

    names = list(fields)
    arrays = [np.asarray(fields[n], dtype=object if not isinstance(fields[n][0], (int, np.integer)) else np.int32)
              for n in names]
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    kw = {"layer": layer} if layer else {}
    write(str(path), wkb, arrays, names, crs=crs, geometry_type="Polygon", **kw)
    return path


def test_smart_phases_become_positive_negative_and_ignored_over_time(tmp_path):
    path = _smart(tmp_path / "US_R001_9001.geojson", "positive_annotated", [
        ("2016-01-10", "No Activity"),
        ("2016-03-01", "Site Preparation"),
        ("2016-06-01", "Active Construction"),
        ("2016-09-01", "Unknown"),
        ("2016-11-01", "Post Construction, Active Construction"),
        ("2017-01-05", "Post Construction"),
        ("2017-02-01", None),
    ])
    labels = read_labels(path)
    by_start = {p.start: p for p in labels.polygons}
    assert by_start[D(2016, 1, 10)].value == NEGATIVE
    assert by_start[D(2016, 3, 1)].value == POSITIVE
    assert by_start[D(2016, 6, 1)].value == POSITIVE
    assert by_start[D(2016, 9, 1)].value == IGNORE
    assert by_start[D(2016, 11, 1)].value == POSITIVE  # a multi-phase observation with construction in it
    assert by_start[D(2017, 1, 5)].value == NEGATIVE
    assert D(2017, 2, 1) not in by_start  # no phase recorded: no label
    # a phase holds until the day before the next observation
    assert [p.value for p in labels.on(D(2016, 4, 15))] == [POSITIVE]
    assert [p.value for p in labels.on(D(2016, 2, 29))] == [NEGATIVE]
    assert [p.value for p in labels.on(D(2016, 10, 1))] == [IGNORE]
    assert labels.on(D(2015, 12, 31)) == []
    assert {p.place for p in labels.polygons} == {"US_R001_9001"}
    assert labels.polygons[0].geometry.bounds == pytest.approx(SITE.bounds)


def test_negative_smart_site_is_background_over_its_dates(tmp_path):
    path = _smart(tmp_path / "US_R001_9002.geojson", "negative", [], start="2016-02-01", end="2016-12-31")
    (poly,) = read_label_file(path)
    assert (poly.value, poly.start, poly.end) == (NEGATIVE, D(2016, 2, 1), D(2016, 12, 31))


def test_unknown_smart_phase_is_an_error_naming_file_and_observation(tmp_path):
    path = _smart(tmp_path / "US_R001_9003.geojson", "positive_annotated", [("2016-01-10", "Demolition")])
    with pytest.raises(LabelError) as err:
        read_labels(path)
    assert "US_R001_9003.geojson" in str(err.value) and "Demolition" in str(err.value)
    assert smart_phase_value("Unknown, Unknown") == IGNORE


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("GROUNDBREAK_REAL_DATA"), reason="GROUNDBREAK_REAL_DATA is not set")
def test_real_smart_site_models_read_with_all_three_outcomes():
    folder = Path(os.environ["GROUNDBREAK_REAL_DATA"]) / "smart" / "site_models"
    labels = read_labels(folder)
    counts = labels.counts()
    assert len(labels.sources) == 56
    assert counts["positive"] > 500 and counts["negative"] > 50 and counts["ignore"] > 50
    lon, lat = labels.polygons[0].geometry.centroid.coords[0]
    assert -82.5 < lon < -81 and 29.5 < lat < 31  # Jacksonville, FL


def test_plugin_review_export_layer(tmp_path):
    # What plugin Review -> Export writes: layer "labels", label int 1/0, date, chip_id, scene_id, source.
    chip = box(500224.0, 5209600.0, 500736.0, 5210112.0)
    path = _layer(tmp_path / "review.gpkg", {
        "label": [1, 0], "date": ["2024-05-09", "2023-06-14"],
        "chip_id": ["32614_512_977_10174", "32614_512_978_10174"],
        "scene_id": ["s1", "s2"], "source": ["review", "review"],
    }, [chip, shapely.affinity.translate(chip, 512)], layer="labels")
    labels = read_labels(path)
    assert [p.value for p in labels.polygons] == [POSITIVE, NEGATIVE]
    assert labels.polygons[0].start == labels.polygons[0].end == D(2024, 5, 9)
    assert labels.polygons[0].place == "32614_512_977_10174"
    lon, lat = labels.polygons[0].geometry.centroid.coords[0]
    assert -99.1 < lon < -98.9 and 47.0 < lat < 47.1  # reprojected from UTM 14N to lon/lat


def test_class_names_and_date_ranges(tmp_path):
    g = box(-98.9, 47.0, -98.89, 47.01)
    path = _layer(tmp_path / "ranges.geojson", {
        "label": ["construction", "background", "ignore"], "start_date": ["2022-01-01", "2022-01-01", "2023-01-01"],
        "end_date": ["2022-12-31", "", "2023-02-01"],
    }, [g, g, g], crs="EPSG:4326")
    labels = read_labels(path)
    assert [p.value for p in labels.polygons] == [POSITIVE, NEGATIVE, IGNORE]
    assert labels.polygons[1].end > D(3000, 1, 1)  # open-ended range
    assert [p.value for p in labels.on(D(2022, 6, 1))] == [POSITIVE, NEGATIVE]


def test_missing_date_field_names_the_file_and_the_field(tmp_path):
    path = _layer(tmp_path / "nodate.geojson", {"label": [1]}, [box(0, 0, 1, 1)], crs="EPSG:4326")
    with pytest.raises(LabelError) as err:
        read_labels(path)
    assert "nodate.geojson" in err.value.message and "'date'" in err.value.message
    assert "start_date" in err.value.hint
    assert isinstance(err.value, GroundbreakError) and isinstance(err.value, ValueError)


def test_empty_date_value_and_bad_label_are_errors(tmp_path):
    g = box(0, 0, 1, 1)
    path = _layer(tmp_path / "blank.geojson", {"label": [1, 1], "date": ["2022-01-01", ""]}, [g, g], crs="EPSG:4326")
    with pytest.raises(LabelError, match=r"blank.geojson.*feature 2"):
        read_labels(path)
    path = _layer(tmp_path / "bad.geojson", {"label": ["maybe"], "date": ["2022-01-01"]}, [g], crs="EPSG:4326")
    with pytest.raises(LabelError, match="maybe"):
        read_labels(path)
    path = _layer(tmp_path / "baddate.geojson", {"label": [1], "date": ["May 2022"]}, [g], crs="EPSG:4326")
    with pytest.raises(LabelError, match="not a date"):
        read_labels(path)


def test_missing_label_field_and_missing_file(tmp_path):
    path = _layer(tmp_path / "nolabel.gpkg", {"date": ["2022-01-01"]}, [box(0, 0, 1, 1)], crs="EPSG:4326")
    with pytest.raises(LabelError, match=r"nolabel.gpkg.*'label'"):
        read_labels(path)
    with pytest.raises(MissingFileError):
        read_labels(tmp_path / "absent.gpkg")


def test_smart_observation_without_a_date_is_an_error_naming_the_field(tmp_path):
    path = _smart(tmp_path / "US_R001_9004.geojson", "positive_annotated",
                  [("2016-01-10", "No Activity"), (None, "Site Preparation")])
    with pytest.raises(LabelError, match=r"US_R001_9004.geojson: observation 2 has no 'observation_date'"):
        read_labels(path)
