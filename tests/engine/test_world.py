"""Tests for the synthetic demo world generator (groundbreak.world)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer
from shapely.geometry import mapping

from groundbreak import world
from groundbreak.errors import MissingFileError, OutputError, UsageError

MASK_CLEAR, MASK_CLOUD, MASK_SHADOW, MASK_NODATA = 0, 1, 2, 255


def _small(seed: int = 3, **kw) -> world.WorldSpec:
    base = dict(seed=seed, width=320, height=288, dates=("2022-05-18", "2023-07-02"), n_sites=1,
                n_lookalikes=1, cloud_fraction=0.2)
    base.update(kw)
    return world.WorldSpec(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> world.WorldManifest:
    return world.generate_world(tmp_path_factory.mktemp("tiny"), world.test_spec())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(scene: world.WorldScene) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(scene.path) as src:
        data = src.read().astype(np.float64) / 10000.0
    with rasterio.open(scene.mask_path) as msk:
        mask = msk.read(1)
    return data, mask


def _ndvi(data: np.ndarray) -> np.ndarray:
    red, nir = data[0], data[3]
    return (nir - red) / np.maximum(nir + red, 1e-6)


def _polygon_pixels(scene: world.WorldScene, geom) -> tuple[np.ndarray, np.ndarray]:
    """Pixel values (4, n) and mask values (n,) of one date inside a ground polygon."""
    data, mask = _read(scene)
    inside = rasterio.features.geometry_mask([mapping(geom)], out_shape=mask.shape,
                                             transform=rasterio.Affine(*scene.transform), invert=True)
    return data[:, inside], mask[inside]


# ---- spec -------------------------------------------------------------------------------------


def test_spec_rejects_bad_values():
    with pytest.raises(UsageError, match="dtype"):
        _small(dtype="float32")
    with pytest.raises(UsageError, match="increasing"):
        _small(dates=("2023-01-01", "2022-01-01"))
    with pytest.raises(UsageError, match="mask_kind"):
        _small(mask_kind="scl")
    err = pytest.raises(UsageError, _small, cloud_fraction=1.5)
    assert err.value.hint


def test_presets_match_their_promises():
    demo = world.demo_spec()
    assert (demo.width, demo.height, len(demo.dates), demo.dtype) == (3072, 3072, 4, "uint16")
    assert 6 <= demo.n_sites <= 8 and demo.grid_shift_m > 0
    test = world.test_spec()
    assert test.width <= 1024 and 2 <= len(test.dates) <= 3 and test.n_sites == 2 and test.nodata_edge
    assert demo.origin[0] % 512 == 0 and demo.origin[1] % 512 == 0
    assert world.WorldSpec.from_dict(json.loads(json.dumps(demo.to_dict()))) == demo
    tl = world.timeline_spec()
    assert len(tl.dates) >= 8 and tl.schedule == "spans" and tl.seed == 7
    assert world.WorldSpec.from_dict(json.loads(json.dumps(tl.to_dict()))) == tl
    # fields added later stay out of an older spec's world.json (so its cache stays valid)
    assert "schedule" not in demo.to_dict() and tl.to_dict()["schedule"] == "spans"


def test_old_specs_render_exactly_as_before(tmp_path):
    """Worlds of existing specs are byte-identical to those made before the 'spans' schedule
    existed (the default model was trained on such worlds; its figures quote them)."""
    spec = world.WorldSpec(seed=3, width=320, height=288, dates=("2022-05-18", "2023-07-02", "2023-09-01"),
                           n_sites=2, n_lookalikes=1, cloud_fraction=0.2)
    m = world.generate_world(tmp_path, spec)
    h = hashlib.sha256()
    for p in [s.path for s in m.scenes] + [s.mask_path for s in m.scenes] + [m.labels_geojson]:
        h.update(p.read_bytes())
    assert h.hexdigest() == "7d6a1df14216d6c0a5e97bb0ad6ee0267bc83287d6c212a1f280226046295eca"


def test_spans_schedule_starts_and_ends_sites_between_dates(spans):
    construction = [s for s in spans.sites if s.kind == "construction"]
    assert len(construction) == 2
    dates = list(spans.dates)
    for s in construction:
        first = s.labels.index(1)
        assert first >= 1 and s.phases[first] == "Site Preparation"  # seen bare first, then starting
        assert dates[first - 1] < s.start_date <= dates[first]
        assert sum(s.labels) >= 3  # at least three active revisits
        run = s.labels[first:]
        assert list(run[: sum(s.labels)]) == [1] * sum(s.labels)  # one contiguous active span
        if s.end_date <= dates[-1]:
            assert s.phases[-1] == "Post Construction" and s.phases[-2] == "Post Construction"
    with pytest.raises(UsageError, match="schedule"):
        world.WorldSpec(seed=1, width=64, height=64, schedule="random")
    with pytest.raises(UsageError, match="at least 5 dates"):
        world.WorldSpec(seed=1, width=64, height=64, schedule="spans")


# ---- files and their declared properties -----------------------------------------------------


def test_scenes_honour_the_spec(tiny):
    spec = tiny.spec
    assert len(tiny.scenes) == len(spec.dates)
    for sc in tiny.scenes:
        assert sc.path.name == f"world_{spec.seed}_{sc.date.replace('-', '')}.tif"
        assert sc.mask_path.name == sc.path.stem + "_mask.tif"
        with rasterio.open(sc.path) as src:
            assert src.crs.to_epsg() == spec.epsg
            assert src.count == 4 and src.dtypes == ("uint16",) * 4
            assert src.nodata == 0
            assert src.descriptions == ("red", "green", "blue", "nir")
            ci = rasterio.enums.ColorInterp
            assert tuple(src.colorinterp) == (ci.red, ci.green, ci.blue, ci.undefined)
            assert src.tags()["TIFFTAG_DATETIME"] == sc.date.replace("-", ":") + " 10:30:00"
            assert src.block_shapes[0] == (spec.tile, spec.tile) and src.is_tiled
            assert src.compression.name.lower() == "deflate"
            assert src.res == (spec.gsd, spec.gsd)
            assert (src.width, src.height) == (sc.width, sc.height)
            assert tuple(src.transform)[:6] == pytest.approx(sc.transform)
            # scene.py reads dates from this tag: make sure it parses back to the file's date
            tag = dt.datetime.strptime(src.tags()["TIFFTAG_DATETIME"], "%Y:%m:%d %H:%M:%S").date()
            assert tag.isoformat() == sc.date
        with rasterio.open(sc.mask_path) as msk:
            assert msk.count == 1 and msk.dtypes[0] == "uint8" and msk.crs == src.crs
            assert msk.transform == src.transform and msk.shape == src.shape
            assert set(np.unique(msk.read(1))) <= {MASK_CLEAR, MASK_CLOUD, MASK_SHADOW, MASK_NODATA}
            assert msk.overviews(1), "masks carry overviews for cheap decimated screening"


def test_masks_agree_with_pixels(tiny):
    nodata_dates = cloudy_dates = 0
    for sc in tiny.scenes:
        data, mask = _read(sc)
        raw_zero = data == 0
        nod = mask == MASK_NODATA
        assert raw_zero[:, nod].all(), "nodata pixels must be 0 in every band"
        assert not raw_zero[:, ~nod].any(), "a valid pixel must never be 0"
        nodata_dates += bool(nod.any())
        clear = mask == MASK_CLEAR
        cloud = mask == MASK_CLOUD
        shadow = mask == MASK_SHADOW
        if cloud.sum() > 500:
            cloudy_dates += 1
            for b in range(3):  # clouds brighten every band, NIR too
                assert data[b][cloud].mean() > 1.8 * data[b][clear].mean()
            assert data[3][cloud].mean() > data[3][clear].mean() + 0.03
            assert np.median(data[2][cloud]) > np.percentile(data[2][clear], 99)
        if shadow.sum() > 500:
            assert data[:3, shadow].mean() < 0.8 * data[:3, clear].mean()
        measured = (cloud.sum() + shadow.sum()) / max((~nod).sum(), 1)
        assert sc.cloud_fraction == pytest.approx(measured, abs=1e-4)
        assert sc.nodata_fraction == pytest.approx(nod.mean(), abs=1e-4)
    assert nodata_dates >= 1 and cloudy_dates >= 1
    mean_cloud = np.mean([sc.cloud_fraction for sc in tiny.scenes])
    assert 0.5 * tiny.spec.cloud_fraction < mean_cloud < 1.6 * tiny.spec.cloud_fraction


def test_nodata_edge_is_irregular_not_a_straight_line(tiny):
    sc = max(tiny.scenes, key=lambda s: s.nodata_fraction)
    _, mask = _read(sc)
    nod = mask == MASK_NODATA
    assert 0.005 < nod.mean() < 0.4
    # per row, where nodata ends: a slanted, jagged boundary has many distinct steps
    rows = [np.flatnonzero(r).size for r in nod if 0 < r.sum() < r.size]
    assert len(set(rows)) > 20
    assert np.abs(np.diff(np.diff(rows))).max() >= 2  # not a perfectly straight staircase


def _phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Sub-pixel (drow, dcol) such that b(r, c) ~ a(r - drow, c - dcol), by phase correlation."""
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-9)).real
    r, c = np.unravel_index(np.argmax(corr), corr.shape)
    out = []
    for axis, (i, n) in enumerate(((r, corr.shape[0]), (c, corr.shape[1]))):
        idx = [r, c]
        vals = []
        for d in (-1, 0, 1):
            idx[axis] = (i + d) % n
            vals.append(corr[tuple(idx)])
        denom = vals[0] - 2 * vals[1] + vals[2]
        frac = 0.5 * (vals[0] - vals[2]) / denom if denom else 0.0
        pos = i + frac
        out.append(pos - n if pos > n / 2 else pos)
    return out[0], out[1]


def test_dates_have_shifted_grids_but_the_ground_lines_up(tiny):
    spec = tiny.spec
    t0 = tiny.scenes[0].transform
    assert (t0[2], t0[5]) == spec.origin, "date 0 is not shifted"
    shifted = 0
    ref, _ = _read(tiny.scenes[0])
    n = 512
    for sc in tiny.scenes[1:]:
        dx, dy = sc.transform[2] - t0[2], sc.transform[5] - t0[5]
        assert max(abs(dx), abs(dy)) <= spec.grid_shift_m + 1e-9
        if max(abs(dx), abs(dy)) > 0.5 * spec.gsd:
            shifted += 1
        data, _ = _read(sc)
        # ground point X sits at column (X - x0_k) / gsd on date k: the image moves by -dx / gsd
        drow, dcol = _phase_shift(ref[2, :n, :n], data[2, :n, :n])
        assert dcol == pytest.approx(-dx / spec.gsd, abs=0.35)
        assert drow == pytest.approx(dy / spec.gsd, abs=0.35)
    assert shifted >= 1, "at least one date must be off the date-0 pixel grid by > half a pixel"
    assert all(abs(s.width - spec.width) <= 1 and abs(s.height - spec.height) <= 1 for s in tiny.scenes)


def test_site_centres_land_on_the_same_ground_every_date(tiny):
    for site in tiny.sites:
        cx, cy = site.centroid
        for sc in tiny.scenes:
            t = rasterio.Affine(*sc.transform)
            col, row = ~t @ (cx, cy)
            x, y = t @ (np.floor(col) + 0.5, np.floor(row) + 0.5)
            # the pixel holding the centre is within half a pixel of it on every (shifted) grid
            assert abs(x - cx) <= tiny.spec.gsd / 2 + 1e-6 and abs(y - cy) <= tiny.spec.gsd / 2 + 1e-6
            assert 0 <= col < sc.width and 0 <= row < sc.height


# ---- sites, phases and spectra ---------------------------------------------------------------


def test_site_phases_progress_monotonically(tiny):
    construction = [s for s in tiny.sites if s.kind == "construction"]
    assert len(construction) == tiny.spec.n_sites
    positives = 0
    for s in construction:
        order = [world.PHASES.index(p) for p in s.phases]
        assert order == sorted(order), s
        assert s.labels == tuple(int(p in ("Site Preparation", "Active Construction")) for p in s.phases)
        assert s.start_date and s.end_date and s.start_date < s.end_date
        positives += sum(s.labels)
    assert positives >= 1
    starts = {s.phases.index(next(p for p in s.phases if p != "No Activity"))
              for s in construction if set(s.phases) != {"No Activity"}}
    assert len(starts) >= 2, "sites start on different dates"
    for s in tiny.sites:
        if s.kind != "construction":
            assert set(s.phases) == {"No Activity"} and set(s.labels) == {0}
    assert {s.kind for s in tiny.sites} == set(world.KINDS)


def test_ndvi_vegetation_above_bare_soil_above_construction(tiny):
    soil, building = [], []
    veg = []
    for k, sc in enumerate(tiny.scenes):
        data, mask = _read(sc)
        clear = mask == MASK_CLEAR
        veg.append(np.percentile(_ndvi(data)[clear], 90))
        for s in tiny.sites:
            geom = shapely.from_wkt(s.polygon_wkt).buffer(-8)
            px, m = _polygon_pixels(sc, geom)
            px = px[:, m == MASK_CLEAR]
            if px.shape[1] < 200:
                continue
            ndvi = float(np.median(_ndvi(px)))
            if s.kind == "tilled_field":
                soil.append(ndvi)
            elif s.kind == "construction" and s.phases[k] == "Site Preparation":
                building.append(ndvi)
                nir_red = float(np.median(px[3] / px[0]))
                assert 1.0 < nir_red < 1.3
                assert px[:3].mean() > 0.15  # bright bare soil
    assert soil and building and veg
    assert min(veg) > max(soil) + 0.2
    assert min(soil) > max(building) + 0.03
    r = world._R  # the reflectance library itself: tilled soil NIR/red ~ 1.2-1.5, crops 3-6+
    assert 1.2 <= r["tilled"][3] / r["tilled"][0] <= 1.5
    assert 1.05 <= r["cleared"][3] / r["cleared"][0] <= 1.15
    assert r["grass"][3] / r["grass"][0] >= 3


@pytest.fixture(scope="module")
def spans(tmp_path_factory) -> world.WorldManifest:
    """A small cloud-free 'spans' world: every site is seen before and during construction."""
    spec = world.WorldSpec(seed=5, width=640, height=640, dates=world.TIMELINE_DATES[:6], n_sites=2, n_lookalikes=3,
                           cloud_fraction=0.0, schedule="spans")
    return world.generate_world(tmp_path_factory.mktemp("spans"), spec)


def test_construction_changes_the_ground_and_look_alikes_do_not(tiny, spans):
    compared = {"construction": 0, "look-alike": 0}
    for w in (tiny, spans):
        for s in w.sites:
            geom = shapely.from_wkt(s.polygon_wkt).buffer(-8)
            means = []
            for sc in w.scenes:
                px, m = _polygon_pixels(sc, geom)
                ok = m == MASK_CLEAR
                means.append(px[:, ok].mean(axis=1) if ok.mean() > 0.8 else None)
            if s.kind == "construction":
                before = [v for v, p in zip(means, s.phases) if p == "No Activity" and v is not None]
                during = [v for v, p in zip(means, s.phases) if p == "Site Preparation" and v is not None]
                if before and during:
                    assert during[0][:3].mean() > before[0][:3].mean() + 0.03
                    compared["construction"] += 1
            elif s.kind in ("sports_field", "parking") and w is tiny:
                seen = [v for v in means if v is not None]
                for v in seen[1:]:
                    assert np.abs(v - seen[0]).max() < 0.05
                compared["look-alike"] += len(seen) > 1
    # the cloud-free spans world guarantees comparisons: the test cannot pass by comparing nothing
    assert compared["construction"] >= 2 and compared["look-alike"] >= 1, compared


# ---- labels, AOI, manifest -------------------------------------------------------------------


def test_labels_are_readable_in_their_stated_crs(tiny):
    spec = tiny.spec
    info = pyogrio.read_info(tiny.labels_gpkg, layer="labels")
    assert info["crs"] == f"EPSG:{spec.epsg}"
    assert info["features"] == len(tiny.sites) * len(spec.dates)
    for name in ("site_id", "date", "phase", "label", "kind"):
        assert name in list(info["fields"])
    gj = pyogrio.read_info(tiny.labels_geojson)
    assert gj["crs"] == "EPSG:4326" and gj["features"] == info["features"]
    meta, _, _, fields = pyogrio.raw.read(tiny.labels_gpkg, layer="labels")
    by_name = dict(zip(meta["fields"], fields))
    assert set(by_name["phase"]) <= set(world.PHASES)
    assert set(by_name["kind"]) <= set(world.KINDS)
    for phase, label in zip(by_name["phase"], by_name["label"]):
        assert label == int(phase in ("Site Preparation", "Active Construction"))
    doc = json.loads(tiny.labels_geojson.read_text())
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{spec.epsg}", always_xy=True)
    utm = {(s.site_id): shapely.from_wkt(s.polygon_wkt) for s in tiny.sites}
    for f in doc["features"]:
        g = shapely.geometry.shape(f["geometry"])
        lon, lat = g.centroid.x, g.centroid.y
        assert -180 < lon < 180 and -90 < lat < 90
        back = shapely.transform(g, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        site = utm[f["properties"]["site_id"]]
        assert back.symmetric_difference(site).area < 1e-4 * site.area  # centimetre rounding only
        assert f["properties"]["label"] == int(f["properties"]["phase"] in world.POSITIVE_PHASES)
        assert 0 <= f["properties"]["valid_fraction"] <= 1


def test_aoi_covers_most_of_the_world_but_is_not_its_box(tiny):
    spec = tiny.spec
    doc = json.loads(tiny.aoi.read_text())
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{spec.epsg}", always_xy=True)
    g = shapely.geometry.shape(doc["features"][0]["geometry"])
    g = shapely.transform(g, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
    x0, y0 = spec.origin
    world_box = shapely.box(x0, y0 - spec.height * spec.gsd, x0 + spec.width * spec.gsd, y0)
    assert world_box.buffer(1).contains(g)
    assert 0.5 < g.area / world_box.area < 0.97
    assert g.area / g.minimum_rotated_rectangle.area < 0.97


def test_load_world_round_trips(tiny):
    assert world.load_world(tiny.out_dir) == tiny
    assert tiny.dates == tiny.spec.dates


def test_unwritable_output_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as err:
        world.generate_world(blocker / "w", _small())
    assert err.value.hint


def test_load_world_without_a_world_says_how_to_make_one(tmp_path):
    with pytest.raises(MissingFileError) as err:
        world.load_world(tmp_path)
    assert "make_test_data" in err.value.hint


# ---- determinism and caching -----------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    spec = _small()
    a = world.generate_world(tmp_path / "a", spec)
    b = world.generate_world(tmp_path / "b", spec)
    c = world.generate_world(tmp_path / "c", dataclasses.replace(spec, seed=4))
    def files(m):
        return [s.path for s in m.scenes] + [s.mask_path for s in m.scenes] + [m.labels_geojson, m.labels_gpkg]

    assert [_sha(p) for p in files(a)] == [_sha(p) for p in files(b)]
    assert all(_sha(p) != _sha(q) for p, q in zip(files(a)[:2], files(c)[:2]))
    assert a.sites == b.sites


def test_generate_world_reuses_a_cached_world_with_the_same_spec(tmp_path):
    spec = _small(mask_kind="none", n_sites=0, n_lookalikes=0)
    first = world.generate_world(tmp_path, spec)
    stamp = [s.path.stat().st_mtime_ns for s in first.scenes]
    again = world.generate_world(tmp_path, spec)
    assert again == first
    assert [s.path.stat().st_mtime_ns for s in again.scenes] == stamp
    changed = world.generate_world(tmp_path, dataclasses.replace(spec, cloud_fraction=0.0))
    assert changed.spec.cloud_fraction == 0.0
    assert all(s.cloud_fraction == 0.0 for s in changed.scenes)
    assert json.loads((tmp_path / "world.json").read_text())["spec"]["cloud_fraction"] == 0.0


def test_uint8_and_udm2_variants(tmp_path):
    spec = _small(seed=5, dtype="uint8", mask_kind="udm2", dates=("2023-07-02",), nodata_edge=True)
    man = world.generate_world(tmp_path, spec)
    sc = man.scenes[0]
    assert sc.mask_path.name.endswith("_udm2.tif")
    with rasterio.open(sc.path) as src, rasterio.open(sc.mask_path) as msk:
        assert src.dtypes[0] == "uint8"
        data = src.read()
        udm = msk.read()
    assert udm.shape[0] == 8
    blackfill = (udm[7] & 1) == 1
    assert blackfill.any()
    assert (data[:, blackfill] == 0).all() and (data[:, ~blackfill] > 0).all()
    clear, shadow, cloud = udm[0] == 1, udm[2] == 1, udm[5] == 1
    assert not (clear & (cloud | shadow | blackfill)).any()
    assert (clear | cloud | shadow | blackfill).all()
    assert (udm[6][~blackfill] > 0).all() and (udm[6][blackfill] == 0).all()
    if cloud.sum() > 100:
        assert data[:, cloud].mean() > 1.8 * data[:, clear].mean()


def test_large_scene_is_tiled_textured_cloudy_and_cached(tmp_path):
    path = world.generate_large_scene(tmp_path / "big.tif", size=1024, seed=2, cloud_fraction=0.35)
    mask_path = path.with_name("big_mask.tif")
    assert mask_path.is_file()
    with rasterio.open(path) as src, rasterio.open(mask_path) as msk:
        assert src.is_tiled and src.block_shapes[0] == (256, 256) and src.count == 4
        assert src.nodata == 0 and src.dtypes[0] == "uint16"
        data = src.read(4)
        mask = msk.read(1)
    valid = mask != MASK_NODATA
    covered = np.isin(mask, (MASK_CLOUD, MASK_SHADOW))[valid].mean()
    assert 0.2 < covered < 0.5
    clear = data[mask == MASK_CLEAR]
    assert clear.std() > 200  # textured, not constant
    stamp = path.stat().st_mtime_ns
    assert world.generate_large_scene(path, size=1024, seed=2, cloud_fraction=0.35) == path
    assert path.stat().st_mtime_ns == stamp
