"""Scenes: discovery, dates, band roles, sidecar masks, select_bands, decode_mask, describe_scene."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.enums import ColorInterp as CI

from groundbreak.errors import (
    BandMismatchError,
    CorruptFileError,
    MissingDateError,
    MissingFileError,
    UsageError,
)
from groundbreak.masks import CLOUD, NODATA, SHADOW, VALID, MaskRules, MaskSource, decode_mask
from groundbreak.scene import (
    date_from_name,
    describe_scene,
    discover_scenes,
    looks_like_sidecar,
    open_scene,
    parse_band_order,
    quick_hash,
    select_bands,
)

try:
    from scene_fixtures import truncate, write_classes, write_raster, write_udm2
except ImportError:  # collected with a package-style rootdir
    sys.path.insert(0, str(Path(__file__).parent))
    from scene_fixtures import truncate, write_classes, write_raster, write_udm2

RGBN = ("red", "green", "blue", "nir")
UNDEF4 = (CI.undefined,) * 4


# ------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(
    "name, expected",
    [
        ("m_4709963_se_14_1_20090818.tif", dt.date(2009, 8, 18)),
        ("scene_2021-06-30_x.tif", dt.date(2021, 6, 30)),
        ("20151119_025740_0c74_3B_AnalyticMS.tif", dt.date(2015, 11, 19)),
        ("S2A_20230101T103421_tile.tif", dt.date(2023, 1, 1)),
        # 13th month, and a year outside 1970-2100, are not dates; the later valid one is.
        ("a_20091318_b_20100629.tif", dt.date(2010, 6, 29)),
        ("tile_21500101.tif", None),
        ("tile_123456789.tif", None),  # 9 digits are an id, not a date
        ("plain.tif", None),
    ],
)
def test_date_from_name(name, expected):
    assert date_from_name(name) == expected


def test_date_from_file_name(tmp_path):
    scene = open_scene(write_raster(tmp_path / "m_4709963_se_14_1_20090818.tif"))
    assert scene.date == dt.date(2009, 8, 18)
    assert scene.date_source == "filename"


def test_tiff_tag_date_beats_file_name(tmp_path):
    path = write_raster(
        tmp_path / "scene_20090818.tif", tags={"TIFFTAG_DATETIME": "2012:07:31 10:11:12"}
    )
    scene = open_scene(path)
    assert (scene.date, scene.date_source) == (dt.date(2012, 7, 31), "tiff-tag")


def test_acquisition_date_tag(tmp_path):
    scene = open_scene(write_raster(tmp_path / "x.tif", tags={"ACQUISITION_DATE": "2014-07-20"}))
    assert (scene.date, scene.date_source) == (dt.date(2014, 7, 20), "tiff-tag")


def test_override_date_beats_everything(tmp_path):
    path = write_raster(tmp_path / "s_20090818.tif", tags={"TIFFTAG_DATETIME": "2012:07:31 00:00:00"})
    scene = open_scene(path, date="2020-02-29")
    assert (scene.date, scene.date_source) == (dt.date(2020, 2, 29), "override")


def test_bad_override_date_is_usage_error(tmp_path):
    path = write_raster(tmp_path / "s.tif")
    with pytest.raises(UsageError, match="2021-02-30"):
        open_scene(path, date="2021-02-30")


def test_no_date_says_how_to_supply_one(tmp_path):
    path = write_raster(tmp_path / "nodate.tif")
    with pytest.raises(MissingDateError) as info:
        open_scene(path)
    assert "nodate.tif" in str(info.value)
    for fix in ("rename", "gdal_edit.py -mo TIFFTAG_DATETIME", "STAC", "--date"):
        assert fix in info.value.hint


# ------------------------------------------------------------------------------------------
# Band roles and select_bands


def test_descriptions_name_bands_in_any_order(tmp_path):
    path = write_raster(
        tmp_path / "bgrn_20200101.tif", descriptions=("Blue", "GREEN", "b4", "Near-Infrared")
    )
    scene = open_scene(path)
    assert scene.band_names == ("blue", "green", "red", "nir")
    assert scene.band_names_source == "description"
    assert select_bands(scene, RGBN) == (3, 2, 1, 4)


def test_descriptions_beat_colorinterp(tmp_path):
    path = write_raster(
        tmp_path / "s_20200101.tif",
        descriptions=("nir", "red", "green", "blue"),
        colorinterp=(CI.red, CI.green, CI.blue, CI.undefined),
    )
    scene = open_scene(path)
    assert scene.band_names == ("nir", "red", "green", "blue")
    assert select_bands(scene, RGBN) == (2, 3, 4, 1)


def test_colorinterp_rgb_plus_undefined_is_rgbn(tmp_path):
    path = write_raster(
        tmp_path / "s_20200101.tif", colorinterp=(CI.red, CI.green, CI.blue, CI.undefined)
    )
    scene = open_scene(path)
    assert scene.band_names == RGBN
    assert scene.band_names_source == "colorinterp"
    assert select_bands(scene, RGBN) == (1, 2, 3, 4)


def test_unlabelled_four_bands_are_assumed_rgbn_with_a_warning(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif", colorinterp=(CI.gray,) + UNDEF4[1:])
    scene = open_scene(path)
    assert scene.band_names == RGBN
    assert scene.band_names_source == "assumed-rgbn"
    assert any("assumed R,G,B,NIR" in w for w in describe_scene(scene)["warnings"])


def test_unlabelled_planet_analytic_is_bgrn(tmp_path):
    path = write_raster(tmp_path / "20200101_101010_0f12_3B_AnalyticMS.tif", colorinterp=UNDEF4)
    scene = open_scene(path)
    assert scene.band_names == ("blue", "green", "red", "nir")
    assert scene.band_names_source == "assumed-planet-bgrn"
    assert select_bands(scene, RGBN) == (3, 2, 1, 4)


def test_band_order_override(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif", descriptions=("red", "green", "blue", "nir"))
    scene = open_scene(path, band_order="nir,red,green,blue")
    assert scene.band_names == ("nir", "red", "green", "blue")
    assert scene.band_names_source == "override"
    assert select_bands(scene, RGBN) == (2, 3, 4, 1)


def test_band_order_may_skip_a_known_alpha_band(tmp_path):
    path = write_raster(
        tmp_path / "s_20200101.tif", colorinterp=(CI.red, CI.green, CI.blue, CI.alpha), nodata=None
    )
    scene = open_scene(path, band_order=("blue", "green", "red"))
    assert scene.band_names == ("blue", "green", "red", "alpha")


def test_band_order_with_wrong_length_is_usage_error(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif", colorinterp=UNDEF4)
    with pytest.raises(UsageError, match="3 names but .* 4 bands"):
        open_scene(path, band_order="red,green,blue")


def test_parse_band_order():
    assert parse_band_order("R, G, B, NIR") == RGBN
    assert parse_band_order(["red", "-", "nir"]) == ("red", "", "nir")
    assert parse_band_order("red,rededge,nir") == ("red", "rededge", "nir")
    with pytest.raises(UsageError, match="more than once"):
        parse_band_order("red,red,blue,nir")


def test_alpha_band_is_never_data(tmp_path):
    path = write_raster(
        tmp_path / "rgba_20200101.tif", colorinterp=(CI.red, CI.green, CI.blue, CI.alpha), nodata=None
    )
    scene = open_scene(path)
    assert scene.alpha_band == 4
    assert scene.band_names == ("red", "green", "blue", "alpha")
    assert scene.data_bands == (1, 2, 3)
    with pytest.raises(BandMismatchError) as info:
        select_bands(scene, RGBN)
    message = str(info.value)
    assert "red, green, blue, nir" in message  # the model's bands
    assert "4=alpha" in message and "1=red" in message  # the scene's bands, with indexes
    assert info.value.hint
    assert select_bands(scene, ("red", "green", "blue")) == (1, 2, 3)
    with pytest.raises(BandMismatchError):
        select_bands(scene, ("alpha",))


def test_alpha_from_description(tmp_path):
    path = write_raster(
        tmp_path / "s_20200101.tif", descriptions=("red", "green", "blue", "Alpha"), nodata=None
    )
    scene = open_scene(path)
    assert scene.alpha_band == 4
    assert scene.data_bands == (1, 2, 3)


def test_three_band_file_for_rgbn_model_is_an_error_not_a_repeat(tmp_path):
    path = write_raster(tmp_path / "rgb_20200101.tif", count=3, colorinterp=(CI.red, CI.green, CI.blue))
    scene = open_scene(path)
    assert scene.band_names == ("red", "green", "blue")
    with pytest.raises(BandMismatchError) as info:
        select_bands(scene, RGBN)
    assert "nir" in str(info.value)
    assert "3=blue" in str(info.value)
    assert "only 3 data band" in info.value.hint


def test_unlabelled_bands_hint_suggests_band_order(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif", count=5, colorinterp=(CI.undefined,) * 5)
    scene = open_scene(path)
    assert scene.band_names == ("",) * 5
    with pytest.raises(BandMismatchError) as info:
        select_bands(scene, RGBN)
    assert "--band-order red,green,blue,nir" in info.value.hint


def test_duplicate_labels_are_ambiguous(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif", descriptions=("red", "red", "blue", "nir"))
    scene = open_scene(path)
    with pytest.raises(BandMismatchError, match="more than one band named red"):
        select_bands(scene, RGBN)


def test_nodata_dtype_and_internal_mask(tmp_path):
    plain = open_scene(write_raster(tmp_path / "a_20200101.tif", dtype="uint16", nodata=0))
    assert plain.nodata == 0.0
    assert plain.dtype == "uint16"
    assert plain.has_internal_mask is False
    assert plain.epsg == 32614
    assert plain.res == (2.0, 2.0)
    assert (plain.width, plain.height, plain.count) == (64, 48, 4)
    left, bottom, right, top = plain.bounds
    assert (left, top, right - left, top - bottom) == (485_900.0, 5_209_250.0, 128.0, 96.0)

    masked = open_scene(
        write_raster(tmp_path / "b_20200101.tif", nodata=None, internal_mask=True)
    )
    assert masked.nodata is None
    assert masked.has_internal_mask is True


# ------------------------------------------------------------------------------------------
# Errors for broken input


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="nope_20200101.tif"):
        discover_scenes([str(tmp_path / "nope_20200101.tif")])


def test_truncated_tiff_is_corrupt(tmp_path):
    path = write_raster(tmp_path / "cut_20200101.tif", width=256, height=256, tiled=True)
    truncate(path, 0.5)
    with pytest.raises(CorruptFileError, match="cut_20200101.tif"):
        open_scene(path)


def test_tiff_with_cut_header_is_corrupt(tmp_path):
    path = write_raster(tmp_path / "cut_20200101.tif")
    truncate(path, 0.002)
    with pytest.raises(CorruptFileError) as info:
        discover_scenes([path])
    assert info.value.hint


def test_not_a_raster_is_corrupt(tmp_path):
    path = tmp_path / "text_20200101.tif"
    path.write_text("not a tiff")
    with pytest.raises(CorruptFileError):
        open_scene(path)


def test_raster_without_crs_is_refused(tmp_path):
    path = write_raster(tmp_path / "nocrs_20200101.tif", crs=None)
    with pytest.raises(CorruptFileError, match="coordinate reference system") as info:
        open_scene(path)
    assert "-a_srs" in info.value.hint


def test_glob_or_directory_matching_nothing_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="matched no scene"):
        discover_scenes([str(tmp_path / "*.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no GeoTIFF"):
        discover_scenes([str(tmp_path / "empty")])


# ------------------------------------------------------------------------------------------
# Discovery


def test_discover_sorts_by_date_and_deduplicates(tmp_path):
    for name in ("b_20120731.tif", "a_20120731.tif", "c_20090818.tif"):
        write_raster(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    scenes = discover_scenes(
        [str(tmp_path / "*.tif"), str(tmp_path), str(tmp_path / "a_20120731.tif")]
    )
    assert [s.scene_id for s in scenes] == ["c_20090818", "a_20120731", "b_20120731"]


def test_same_stem_in_two_folders_gets_unique_ids(tmp_path):
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        write_raster(tmp_path / sub / "tile_20200101.tif", seed=len(sub))
    scenes = discover_scenes([str(tmp_path / "one"), str(tmp_path / "two")])
    ids = [s.scene_id for s in scenes]
    assert len(set(ids)) == 2
    assert all(i.startswith("tile_20200101-") for i in ids)


def test_date_override_applies_to_discovered_scenes(tmp_path):
    write_raster(tmp_path / "nodate.tif")
    (scene,) = discover_scenes([str(tmp_path / "nodate.tif")], date="2019-05-01")
    assert scene.date == dt.date(2019, 5, 1)


def test_quick_hash_tracks_file_content(tmp_path):
    path = write_raster(tmp_path / "a_20200101.tif", width=800, height=800, count=4)  # > 2 MiB
    assert os.path.getsize(path) > 2 * (1 << 20)
    copy = tmp_path / "copy_20200101.tif"
    shutil.copy(path, copy)
    assert quick_hash(path) == quick_hash(str(copy)) == open_scene(path).quick_hash
    with open(copy, "r+b") as fh:
        fh.seek(-10, os.SEEK_END)
        fh.write(b"0123456789")
    assert quick_hash(str(copy)) != quick_hash(path)


# ------------------------------------------------------------------------------------------
# Sidecar masks


def test_udm2_sidecar_found_and_not_a_scene(tmp_path):
    scene_path = write_raster(tmp_path / "s_20200101.tif")
    write_udm2(tmp_path / "s_20200101_udm2.tif")
    scenes = discover_scenes([str(tmp_path)])
    assert [s.scene_id for s in scenes] == ["s_20200101"]
    (mask,) = scenes[0].mask_sources
    assert mask.kind == "udm2"
    assert mask.origin == "filename-pattern"
    assert mask.path.endswith("s_20200101_udm2.tif")
    assert discover_scenes([str(tmp_path / "*.tif")])[0].path == scene_path


def test_scl_and_class_mask_sidecars(tmp_path):
    write_raster(tmp_path / "s2_20200101.tif")
    write_classes(tmp_path / "s2_20200101_SCL.tif", np.zeros((48, 64)))
    write_raster(tmp_path / "gb_20200101.tif")
    write_classes(tmp_path / "gb_20200101_cloudmask.tif", np.zeros((48, 64)))
    write_raster(tmp_path / "gc_20200101.tif")
    write_classes(tmp_path / "gc_20200101_mask.tif", np.zeros((48, 64)))
    scenes = {s.scene_id: s for s in discover_scenes([str(tmp_path)])}
    assert sorted(scenes) == ["gb_20200101", "gc_20200101", "s2_20200101"]
    (scl,) = scenes["s2_20200101"].mask_sources
    assert scl.kind == "classes"
    assert (set(scl.cloud_values), set(scl.shadow_values), set(scl.nodata_values)) == (
        {8, 9, 10, 11}, {2, 3}, {0, 1},
    )
    for sid in ("gb_20200101", "gc_20200101"):
        (gb,) = scenes[sid].mask_sources
        assert (gb.cloud_values, gb.shadow_values, gb.nodata_values) == ((1,), (2,), (255,))


def test_planet_style_udm2_next_to_analytic(tmp_path):
    write_raster(
        tmp_path / "20151119_025740_0c74_3B_AnalyticMS_clip.tif",
        descriptions=("blue", "green", "red", "nir"),
    )
    write_udm2(tmp_path / "20151119_025740_0c74_3B_udm2_clip.tif")
    (scene,) = discover_scenes([str(tmp_path)])
    assert scene.date == dt.date(2015, 11, 19)
    (mask,) = scene.mask_sources
    assert (mask.kind, os.path.basename(mask.path)) == ("udm2", "20151119_025740_0c74_3B_udm2_clip.tif")


def test_mask_rules_override_pattern_and_values(tmp_path):
    write_raster(tmp_path / "s_20200101.tif")
    write_classes(tmp_path / "s_20200101.cloud.tif", np.zeros((48, 64)))
    rules = MaskRules(pattern="{stem}.cloud.tif", cloud_values=(7,), nodata_values=(9,))
    (scene,) = discover_scenes([str(tmp_path)], mask_rules=rules)
    (mask,) = scene.mask_sources
    assert mask.path.endswith("s_20200101.cloud.tif")
    assert (mask.kind, mask.cloud_values, mask.shadow_values, mask.nodata_values) == (
        "classes", (7,), (2,), (9,),
    )
    assert looks_like_sidecar(str(tmp_path / "x.cloud.tif"), rules)
    with pytest.raises(UsageError):
        MaskRules(pattern="cloud.tif")


def test_explicit_mask(tmp_path):
    path = write_raster(tmp_path / "s_20200101.tif")
    mask_path = write_udm2(tmp_path / "quality_udm2.tif")
    scene = open_scene(path, mask=mask_path)
    assert [(m.kind, m.origin) for m in scene.mask_sources] == [("udm2", "explicit")]


def test_unreadable_sidecar_mask_is_corrupt(tmp_path):
    write_raster(tmp_path / "s_20200101.tif")
    (tmp_path / "s_20200101_udm2.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(CorruptFileError, match="s_20200101_udm2.tif"):
        discover_scenes([str(tmp_path)])


# ------------------------------------------------------------------------------------------
# decode_mask


def test_decode_udm2_classes_and_precedence():
    h, w = 4, 6
    raw = np.zeros((8, h, w), dtype=np.uint8)
    raw[0] = 1  # clear
    raw[3, 0, :] = 1  # light haze: still valid
    raw[2, 1, :] = 1  # shadow
    raw[5, 2, :3] = 1  # cloud
    raw[1, 2, 3:] = 1  # snow -> cloud
    raw[4, 3, :2] = 1  # heavy haze -> cloud
    raw[2, 3, :2] = 1  # and shadow: cloud wins
    raw[7, :, 5] = 1  # blackfill column: nodata beats everything
    raw[5, :, 5] = 1
    raw[7, 0, 4] = 2  # other legacy-UDM bits are not blackfill
    out = decode_mask(MaskSource(path="m.tif", kind="udm2"), raw)
    assert out.dtype == np.uint8 and out.shape == (h, w)
    expected = np.array(
        [
            [VALID] * 5 + [NODATA],
            [SHADOW] * 5 + [NODATA],
            [CLOUD] * 5 + [NODATA],
            [CLOUD, CLOUD, VALID, VALID, VALID, NODATA],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(out, expected)


def test_decode_scl_and_groundbreak_classes():
    scl = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    src = MaskSource(
        path="s_SCL.tif", kind="classes", cloud_values=(8, 9, 10, 11), shadow_values=(2, 3),
        nodata_values=(0, 1),
    )
    np.testing.assert_array_equal(
        decode_mask(src, scl).ravel(),
        [NODATA, NODATA, SHADOW, SHADOW, VALID, VALID, VALID, VALID, CLOUD, CLOUD, CLOUD, CLOUD],
    )
    gb = MaskSource(path="m.tif", kind="classes", cloud_values=(1,), shadow_values=(2,), nodata_values=(255,))
    np.testing.assert_array_equal(
        decode_mask(gb, np.array([[0, 1, 2, 255, 7]], dtype=np.uint8)),
        [[VALID, CLOUD, SHADOW, NODATA, VALID]],
    )


def test_decode_classes_picks_the_source_band():
    data = np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.uint8)
    src = MaskSource(path="m.tif", kind="classes", band=2, cloud_values=(1,))
    assert (decode_mask(src, data) == CLOUD).all()


def test_decode_rejects_bad_input():
    with pytest.raises(UsageError):
        decode_mask(MaskSource(path="m.tif", kind="udm2"), np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(UsageError):
        decode_mask(MaskSource(path="m.tif", kind="weird"), np.zeros((1, 2, 2), np.uint8))


# ------------------------------------------------------------------------------------------
# STAC


def _item(item_id, href, when="2021-06-30T10:00:00Z", common=("blue", "green", "red", "nir"), extra_assets=None):
    assets = {
        "analytic": {
            "href": href,
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [{"name": f"b{i + 1}", "common_name": c} for i, c in enumerate(common)],
        }
    }
    assets.update(extra_assets or {})
    props = {"datetime": when} if when else {
        "datetime": None, "start_datetime": "2021-07-01T00:00:00Z", "end_datetime": "2021-07-02T00:00:00Z"
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[-99.2, 47.0], [-99.1, 47.0], [-99.1, 47.1], [-99.2, 47.0]]]},
        "bbox": [-99.2, 47.0, -99.1, 47.1],
        "properties": props,
        "links": [],
        "assets": assets,
    }


def test_stac_item_with_relative_hrefs_and_udm2_asset(tmp_path):
    (tmp_path / "img").mkdir()
    write_raster(tmp_path / "img" / "nodate.tif", colorinterp=UNDEF4)
    write_udm2(tmp_path / "img" / "quality.tif")
    doc = _item(
        "item-1",
        "./img/nodate.tif",
        extra_assets={"udm2": {"href": "img/quality.tif", "roles": ["cloud", "cloud-shadow"]}},
    )
    stac = tmp_path / "item.json"
    stac.write_text(json.dumps(doc))
    (scene,) = discover_scenes([str(stac)])
    assert scene.scene_id == scene.stac_item_id == "item-1"
    assert (scene.date, scene.date_source) == (dt.date(2021, 6, 30), "stac")
    assert scene.band_names == ("blue", "green", "red", "nir")
    assert scene.band_names_source == "stac"
    assert select_bands(scene, RGBN) == (3, 2, 1, 4)
    assert os.path.samefile(scene.path, tmp_path / "img" / "nodate.tif")
    (mask,) = scene.mask_sources
    assert (mask.kind, mask.origin) == ("udm2", "stac-asset")
    assert os.path.samefile(mask.path, tmp_path / "img" / "quality.tif")


def test_stac_item_collection_and_start_datetime(tmp_path):
    write_raster(tmp_path / "a.tif", seed=1)
    write_raster(tmp_path / "b.tif", seed=2)
    collection = {
        "type": "FeatureCollection",
        "features": [_item("late", "b.tif"), _item("early", "a.tif", when=None)],
    }
    stac = tmp_path / "items.geojson"
    stac.write_text(json.dumps(collection))
    scenes = discover_scenes([str(stac), str(tmp_path / "a.tif")])  # a.tif also reached via STAC
    assert [(s.scene_id, s.date, s.date_source) for s in scenes] == [
        ("late", dt.date(2021, 6, 30), "stac"),
        ("early", dt.date(2021, 7, 1), "stac"),
    ]


def test_one_item_of_a_stac_file_by_id(tmp_path):
    write_raster(tmp_path / "a.tif", seed=1)
    write_raster(tmp_path / "b.tif", seed=2)
    stac = tmp_path / "items.geojson"
    stac.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [_item("late", "b.tif"), _item("early", "a.tif", when=None)]}))
    assert [s.scene_id for s in discover_scenes([str(stac) + "#early"])] == ["early"]
    with pytest.raises(UsageError, match="no item 'nope'") as info:
        discover_scenes([str(stac) + "#nope"])
    assert "late" in info.value.message and "early" in info.value.message


def test_stac_catalog_walks_items(tmp_path):
    pystac = pytest.importorskip("pystac")
    root = tmp_path / "cat"
    root.mkdir()
    catalog = pystac.Catalog(id="cat", description="test catalog")
    for i, day in enumerate((3, 1, 2)):
        img = write_raster(tmp_path / f"img{i}.tif", seed=i)
        item = pystac.Item.from_dict(_item(f"it{i}", img, when=f"2022-01-0{day}T00:00:00Z"))
        catalog.add_item(item)
    catalog.normalize_and_save(str(root), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    scenes = discover_scenes([str(root / "catalog.json")])
    assert [s.scene_id for s in scenes] == ["it1", "it2", "it0"]
    assert all(s.date_source == "stac" for s in scenes)


def test_stac_missing_asset_and_no_data_asset(tmp_path):
    stac = tmp_path / "item.json"
    stac.write_text(json.dumps(_item("gone", "missing.tif")))
    with pytest.raises(MissingFileError, match="missing.tif"):
        discover_scenes([str(stac)])
    doc = _item("thumb", "x.png")
    doc["assets"] = {"thumbnail": {"href": "x.png", "roles": ["thumbnail"]}}
    stac.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="no data asset"):
        discover_scenes([str(stac)])


def test_json_that_is_not_stac(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(UsageError, match="not a STAC"):
        discover_scenes([str(path)])
    path.write_text("{broken")
    with pytest.raises(CorruptFileError):
        discover_scenes([str(path)])


# ------------------------------------------------------------------------------------------
# describe_scene


def test_describe_scene_is_json_ready(tmp_path):
    write_raster(tmp_path / "s_20200101.tif", colorinterp=(CI.red, CI.green, CI.blue, CI.undefined))
    write_udm2(tmp_path / "s_20200101_udm2.tif")
    (scene,) = discover_scenes([str(tmp_path)])
    info = json.loads(json.dumps(describe_scene(scene)))
    assert info["id"] == "s_20200101"
    assert info["date"] == "2020-01-01" and info["date_source"] == "filename"
    assert info["crs"] == {"epsg": 32614, "name": "WGS 84 / UTM zone 14N"}
    assert info["size"] == {"width": 64, "height": 48, "bands": 4}
    assert [b["name"] for b in info["bands"]] == list(RGBN)
    assert info["band_names_source"] == "colorinterp"
    lon0, lat0, lon1, lat1 = info["bounds_lonlat"]
    assert -99.3 < lon0 < lon1 < -99.0 and 46.9 < lat0 < lat1 < 47.1
    assert info["mask_sources"][0]["kind"] == "udm2"
    assert info["nodata"] == 0.0 and info["alpha_band"] is None
    assert len(info["quick_hash"]) == 64
    assert not any("no mask source" in w for w in info["warnings"])


def test_describe_warns_without_mask_source(tmp_path):
    scene = open_scene(write_raster(tmp_path / "s_20200101.tif", descriptions=RGBN))
    warnings = describe_scene(scene)["warnings"]
    assert any(w.startswith("no mask source: only nodata") for w in warnings)


# ------------------------------------------------------------------------------------------
# Real data (skipped unless GROUNDBREAK_REAL_DATA points at ../shared/data)


@pytest.fixture
def real_data() -> Path:
    root = os.environ.get("GROUNDBREAK_REAL_DATA")
    if not root:
        pytest.skip("GROUNDBREAK_REAL_DATA not set")
    return Path(root)


@pytest.mark.realdata
def test_real_naip_series(real_data):
    scenes = discover_scenes([str(real_data / "naip" / "*.tif")])
    assert [s.date for s in scenes] == [
        dt.date(2009, 8, 18), dt.date(2010, 6, 29), dt.date(2012, 7, 31),
        dt.date(2014, 7, 20), dt.date(2015, 9, 26),
    ]
    for scene in scenes:
        assert scene.date_source == "filename"
        assert scene.band_names == RGBN
        assert scene.epsg == 26914 and scene.dtype == "uint8" and scene.nodata == 0.0
        assert select_bands(scene, RGBN) == (1, 2, 3, 4)
    assert len({s.scene_id for s in scenes}) == 5


@pytest.mark.realdata
def test_real_edge_files(real_data):
    edge = real_data / "edge"
    re3 = open_scene(edge / "RE3_visual_clip.tif", date="2020-01-01")
    assert re3.alpha_band == 4 and re3.band_names == ("red", "green", "blue", "alpha")
    with pytest.raises(BandMismatchError):
        select_bands(re3, RGBN)
    rgb = open_scene(edge / "RGB.byte.tif", date="2020-01-01")
    assert rgb.count == 3
    with pytest.raises(BandMismatchError):
        select_bands(rgb, RGBN)
    suba = open_scene(edge / "rgbn_suba.tif", date="2020-01-01")
    assert suba.band_names == RGBN and suba.band_names_source == "colorinterp"
    assert suba.nodata == 0.0 and suba.epsg == 32618
    assert select_bands(suba, RGBN) == (1, 2, 3, 4)


@pytest.mark.realdata
def test_real_udm2_decodes_mostly_valid(real_data):
    import rasterio

    path = real_data / "edge" / "20151119_025740_0c74_3B_udm2_clip.tif"
    with rasterio.open(path) as ds:
        raw = ds.read()
    classes = decode_mask(MaskSource(path=str(path), kind="udm2"), raw)
    valid = float((classes == VALID).mean())
    assert 0.97 < valid < 0.99
    assert set(np.unique(classes)) <= {VALID, NODATA}
    # and the file is recognised as a sidecar, never a scene
    assert looks_like_sidecar(str(path))


def test_sidecar_names_are_specific():
    for name in ("s_udm2.tif", "s_SCL.tif", "s_mask.tif", "s_cloudmask.TIF",
                 "20151119_025740_0c74_3B_udm2_clip.tif"):
        assert looks_like_sidecar(name), name
    for name in ("austin_mask_free_20200101.tif", "landmask_20200101.tif",
                 "20151119_025740_0c74_3B_AnalyticMS_clip.tif", "m_4709963_se_14_1_20090818.tif"):
        assert not looks_like_sidecar(name), name


def test_model_asking_for_a_band_twice_is_refused(tmp_path):
    scene = open_scene(write_raster(tmp_path / "s_20200101.tif", descriptions=RGBN))
    with pytest.raises(UsageError, match="more than once"):
        select_bands(scene, ("red", "red", "nir"))


def test_stac_scl_and_data_mask_assets(tmp_path):
    write_raster(tmp_path / "img.tif", descriptions=RGBN)
    write_classes(tmp_path / "scl.tif", np.zeros((48, 64)))
    write_classes(tmp_path / "valid.tif", np.ones((48, 64)))
    doc = _item(
        "s2",
        "img.tif",
        common=RGBN,
        extra_assets={
            "SCL": {"href": "scl.tif", "roles": ["data"]},
            "dataMask": {"href": "valid.tif", "roles": ["data-mask"]},
        },
    )
    (tmp_path / "s2.json").write_text(json.dumps(doc))
    (scene,) = discover_scenes([str(tmp_path / "s2.json")])
    assert os.path.basename(scene.path) == "img.tif"  # the mask assets are not the data asset
    kinds = {os.path.basename(m.path): (m.kind, m.cloud_values, m.nodata_values) for m in scene.mask_sources}
    assert kinds == {
        "scl.tif": ("classes", (8, 9, 10, 11), (0, 1)),
        "valid.tif": ("classes", (), (0,)),
    }
    assert scene.band_names_source == "description"  # descriptions outrank STAC names


def test_open_scene_on_a_directory_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="directory"):
        open_scene(tmp_path)
