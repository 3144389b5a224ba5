"""Synthetic demo worlds: multi-date 4-band (R, G, B, NIR) scenes with known construction sites.

A world is a patch of rural/peri-urban land on a UTM grid (fields with plough striping, pivots,
roads, lakes, forest, shelterbelts, villages, farmsteads) with construction sites that move through
the IARPA SMART phases over its dates, and look-alikes (bare tilled fields, sports fields, parking
lots) that never change label. Everything on the ground is defined in ground coordinates (polygons
and coordinate-hashed noise), so dates whose pixel grids are shifted by a few metres still line up
after georeferencing, exactly like real acquisitions do.

Rasters are written strip by strip, so memory stays bounded for a 10,240² benchmark scene, and are
byte-identical for the same seed.

What tells construction apart (the cues a model can learn, and only those):

- Site Preparation: vegetation gone, light tan subsoil (NIR/red ~1.1, visible reflectance higher than
  tilled topsoil), sharp rectilinear (sometimes L-shaped) outline, grader stripes, vehicle tracks,
  topsoil piles, yellow machines, a site trailer, a gravel access road to the nearest road.
- Active Construction: the same ground plus gravel pads, bright concrete slabs, steel frames and
  half-roofed buildings with shadows, excavations, material piles, internal gravel streets.
- Post Construction (label 0): finished roofs, new dark asphalt and parking, sparse young lawn.
- Look-alikes (label 0, unchanged on every date): bare tilled fields with plough striping (dry ones
  nearly as light as dark subsoil), sports pitches (turf or artificial turf, running tracks),
  parking lots with cars beside a big-box store. Ordinary fields also turn bare with the crop
  calendar (row crops are tilled soil until June), so "bare" alone never means construction.

Files (``generate_world``): ``scenes/world_{seed}_{YYYYMMDD}.tif`` (+ ``_mask.tif`` classes 0 clear,
1 cloud, 2 shadow, 255 nodata, or ``_udm2.tif``), ``labels.geojson`` (EPSG:4326) and ``labels.gpkg``
(layer ``labels``, world CRS) with one feature per (site, date): site_id, date, phase, label, kind,
valid_fraction (share of the polygon clear on that date); ``aoi.geojson``; ``world.json``.

Public API: :class:`WorldSpec`, :func:`demo_spec`, :func:`timeline_spec`, :func:`test_spec`, :func:`generate_world`,
:func:`load_world`, :func:`generate_large_scene`, :class:`WorldManifest`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import shapely
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box, mapping

from .errors import CorruptFileError, MissingFileError, OutputError, UsageError

log = logging.getLogger(__name__)

#: Bump when the generator's output changes, so cached worlds are regenerated.
WORLD_FORMAT = 5

PHASES = ("No Activity", "Site Preparation", "Active Construction", "Post Construction")
POSITIVE_PHASES = frozenset({"Site Preparation", "Active Construction"})
KINDS = ("construction", "tilled_field", "sports_field", "parking")
BAND_NAMES = ("red", "green", "blue", "nir")
MASK_CLEAR, MASK_CLOUD, MASK_SHADOW, MASK_NODATA = 0, 1, 2, 255
DEFAULT_DATES = ("2022-05-18", "2022-08-27", "2023-06-14", "2024-05-09")
SCHEDULES = ("staggered", "spans")
_LATER_FIELDS = frozenset({"schedule"})
#: Ten growing-season acquisitions over three years (winters are cloudy and snowy up north): the
#: timeline demo's revisits, 5-10 weeks apart within a season.
TIMELINE_DATES = ("2022-05-10", "2022-06-21", "2022-08-04", "2022-09-16", "2023-05-12", "2023-06-26",
                  "2023-08-09", "2023-09-19", "2024-05-14", "2024-07-02")

# Sun at ~10:30 local time in mid-latitude summer: from the south-east, 50 degrees up. Shadows fall
# to the north-west; per metre of object height they move this far on the ground (x east, y north).
_SUN_AZIMUTH = math.radians(145.0)
_SUN_ELEVATION = math.radians(50.0)
_SHADOW_PER_M = (
    -math.sin(_SUN_AZIMUTH) / math.tan(_SUN_ELEVATION),
    -math.cos(_SUN_AZIMUTH) / math.tan(_SUN_ELEVATION),
)
_CLOUD_HEIGHT_M = 450.0
_UINT8_SCALE = 400.0  # reflectance 0.6375 -> 255, like 8-bit visual products that saturate clouds
_UINT16_SCALE = 10000.0


# --------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """What to generate. ``origin`` is the top-left corner of date 0 in the ``epsg`` CRS (metres)."""

    seed: int
    width: int
    height: int
    gsd: float = 2.0
    epsg: int = 32614
    origin: tuple[float, float] = (500224.0, 5210112.0)
    dates: tuple[str, ...] = DEFAULT_DATES
    n_sites: int = 6
    n_lookalikes: int = 6
    cloud_fraction: float = 0.15
    nodata_edge: bool = True
    grid_shift_m: float = 3.0
    dtype: str = "uint16"
    mask_kind: str = "classes"
    tile: int = 256
    compress: str = "deflate"
    #: How construction sites are scheduled over the dates: "staggered" (each caught in progress on
    #: one date; the original demo and training worlds) or "spans" (each starts between two dates
    #: and runs for several, some ending before the last date: the timeline demo).
    schedule: str = "staggered"

    def __post_init__(self) -> None:
        def bad(what: str, hint: str) -> UsageError:
            return UsageError(f"WorldSpec: {what}", hint=hint)

        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad(f"seed {self.seed!r} must be a non-negative integer", "use e.g. seed=7")
        if self.width < 64 or self.height < 64:
            raise bad(f"size {self.width}x{self.height} px is too small", "use at least 64x64 px")
        if not self.gsd > 0:
            raise bad(f"gsd {self.gsd} must be positive", "use metres per pixel, e.g. 2.0")
        if self.dtype not in ("uint16", "uint8"):
            raise bad(f"dtype {self.dtype!r} is not supported", 'use "uint16" or "uint8"')
        if self.mask_kind not in ("classes", "udm2", "none"):
            raise bad(f"mask_kind {self.mask_kind!r} is not supported", 'use "classes", "udm2" or "none"')
        if not 0.0 <= self.cloud_fraction <= 0.9:
            raise bad(f"cloud_fraction {self.cloud_fraction} is outside [0, 0.9]", "use e.g. 0.15")
        if self.schedule not in SCHEDULES:
            raise bad(f"schedule {self.schedule!r} is not supported", 'use "staggered" or "spans"')
        if self.schedule == "spans" and len(self.dates) < 5:
            raise bad(f"schedule 'spans' needs at least 5 dates, got {len(self.dates)}", "add dates")
        if self.grid_shift_m < 0:
            raise bad(f"grid_shift_m {self.grid_shift_m} is negative", "use 0 for aligned dates")
        if self.tile % 16 or self.tile <= 0:
            raise bad(f"tile {self.tile} is not a positive multiple of 16", "use 256 or 512")
        if self.n_sites < 0 or self.n_lookalikes < 0:
            raise bad("n_sites and n_lookalikes must not be negative", "use 0 for none")
        if not self.dates:
            raise bad("no dates", 'give ISO dates, e.g. ("2022-05-18", "2023-06-14")')
        try:
            parsed = [_dt.date.fromisoformat(d) for d in self.dates]
        except (TypeError, ValueError) as exc:
            raise bad(f"dates {self.dates!r} are not ISO dates ({exc})", "use YYYY-MM-DD") from None
        if parsed != sorted(set(parsed)):
            raise bad(f"dates {self.dates!r} are not strictly increasing", "sort them and drop repeats")

    def to_dict(self) -> dict[str, Any]:
        # Fields added after a world format was fixed are left out at their defaults, so older
        # specs keep their exact world.json (and their cached worlds stay valid).
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.name in _LATER_FIELDS and getattr(self, f.name) == f.default)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorldSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class WorldScene:
    """One date of a world: the scene file, its sidecar mask and its (shifted) pixel grid."""

    date: str
    path: Path
    mask_path: Path | None
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    width: int
    height: int
    cloud_fraction: float  # measured: cloud + shadow pixels / valid pixels
    nodata_fraction: float  # measured: nodata pixels / all pixels


@dataclass(frozen=True, slots=True)
class WorldSite:
    """A labelled place: a construction site or a look-alike (negative), with its phase per date."""

    site_id: str
    kind: str  # one of KINDS
    polygon_wkt: str  # in the world CRS
    centroid: tuple[float, float]
    phases: tuple[str, ...]  # one per world date
    labels: tuple[int, ...]  # 1 for Site Preparation / Active Construction
    start_date: str | None  # first day of site preparation (construction only)
    end_date: str | None  # first day of post construction (construction only)


@dataclass(frozen=True, slots=True)
class WorldManifest:
    out_dir: Path
    spec: WorldSpec
    scenes: tuple[WorldScene, ...]
    sites: tuple[WorldSite, ...]
    labels_geojson: Path
    labels_gpkg: Path
    aoi: Path
    crs: str

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(s.date for s in self.scenes)

    @property
    def scene_paths(self) -> tuple[Path, ...]:
        return tuple(s.path for s in self.scenes)


def demo_spec(seed: int = 7) -> WorldSpec:
    """A 6 x 6 km, 4-date world with 7 staggered construction sites (the `groundbreak demo` data)."""
    return WorldSpec(seed=seed, width=3072, height=3072, n_sites=7, n_lookalikes=6, cloud_fraction=0.15)


def timeline_spec(seed: int = 7) -> WorldSpec:
    """A 4 x 4 km, 10-date world whose 7 construction sites start between known dates and run for
    several revisits (some end, some are still going at the last date): the timeline demo."""
    return WorldSpec(seed=seed, width=2048, height=2048, dates=TIMELINE_DATES, n_sites=7, n_lookalikes=5,
                     cloud_fraction=0.18, schedule="spans")


def test_spec(seed: int = 1) -> WorldSpec:
    """A tiny 1.5 x 1.5 km, 3-date world with 2 sites, some cloud and a nodata edge (fast tests)."""
    return WorldSpec(
        seed=seed,
        width=768,
        height=768,
        dates=("2022-05-18", "2022-09-02", "2023-06-14"),
        n_sites=2,
        n_lookalikes=3,
        cloud_fraction=0.12,
        nodata_edge=True,
    )


test_spec.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


# --------------------------------------------------------------------------------------------
# Coordinate-hashed noise (numpy only): the same ground point gets the same value on every grid
# --------------------------------------------------------------------------------------------

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)


def _hash_unit(seed: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Uniform floats in [-1, 1) from integer lattice coordinates (broadcast), splitmix64 style."""
    s = np.uint64((seed * 0xD1B54A32D192ED03 + 0x8BB84B93962EACC9) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h = ix.astype(np.int64).view(np.uint64) * _M1
        h = h ^ (iy.astype(np.int64).view(np.uint64) * _M2) ^ s
        h ^= h >> np.uint64(30)
        h *= _M3
        h ^= h >> np.uint64(27)
        h *= _M4
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0 / (1 << 24)) - np.float32(1.0)


def _value_noise(seed: int, xs: np.ndarray, ys: np.ndarray, cell: float) -> np.ndarray:
    """Smooth value noise on a lattice of ``cell`` metres, sampled at columns ``xs`` x rows ``ys``.

    Separable interpolation (first along x for each lattice row, then along y) keeps the cost at a
    few passes over the output, which matters for 10,240-px-wide strips.
    """
    gx = xs / cell
    gy = ys / cell
    ix0 = np.floor(gx).astype(np.int64)
    iy0 = np.floor(gy).astype(np.int64)
    fx = (gx - ix0).astype(np.float32)
    fy = (gy - iy0).astype(np.float32)
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    imin, jmin = int(ix0.min()), int(iy0.min())
    nx, ny = int(ix0.max()) - imin + 2, int(iy0.max()) - jmin + 2
    lattice = _hash_unit(seed, (imin + np.arange(nx))[None, :], (jmin + np.arange(ny))[:, None])
    cx = ix0 - imin
    along_x = lattice[:, cx] * (1 - fx) + lattice[:, cx + 1] * fx
    cy = iy0 - jmin
    return along_x[cy] * (1 - fy)[:, None] + along_x[cy + 1] * fy[:, None]


def _fractal(seed: int, xs: np.ndarray, ys: np.ndarray, cell: float, octaves: int) -> np.ndarray:
    out = np.zeros((ys.size, xs.size), np.float32)
    total = 0.0
    for k in range(octaves):
        w = 0.5**k
        out += np.float32(w) * _value_noise(seed * 31 + k, xs, ys, cell / 2**k)
        total += w
    out *= np.float32(1.0 / total)
    return out


# --------------------------------------------------------------------------------------------
# Materials: reflectance (R, G, B, NIR) and texture per feature and date
# --------------------------------------------------------------------------------------------

# Surface reflectances, typical of 4-band smallsat / NAIP products over the US Great Plains.
_R = {
    "grass": (0.060, 0.090, 0.050, 0.290),
    "dry_grass": (0.130, 0.125, 0.085, 0.240),
    "crop": (0.045, 0.085, 0.040, 0.340),
    "golden": (0.160, 0.140, 0.085, 0.280),
    "tilled": (0.130, 0.110, 0.085, 0.180),
    "stubble": (0.175, 0.155, 0.115, 0.235),
    "forest": (0.030, 0.055, 0.028, 0.310),
    "forest_leafoff": (0.070, 0.065, 0.050, 0.160),
    "conifer": (0.025, 0.042, 0.025, 0.210),
    "water": (0.028, 0.042, 0.048, 0.012),
    "marsh": (0.050, 0.075, 0.045, 0.200),
    "asphalt": (0.085, 0.088, 0.090, 0.105),
    "asphalt_new": (0.052, 0.055, 0.058, 0.068),
    "gravel": (0.200, 0.190, 0.170, 0.235),
    "concrete": (0.300, 0.300, 0.290, 0.315),
    "cleared": (0.245, 0.210, 0.165, 0.275),
    "compacted": (0.205, 0.180, 0.145, 0.225),
    "topsoil": (0.100, 0.085, 0.065, 0.140),
    "excavation": (0.115, 0.098, 0.080, 0.132),
    "sand": (0.320, 0.285, 0.220, 0.345),
    "gravel_pile": (0.215, 0.210, 0.200, 0.232),
    "equipment": (0.380, 0.300, 0.050, 0.360),
    "steel": (0.175, 0.185, 0.195, 0.200),
    "lawn": (0.055, 0.095, 0.050, 0.330),
    "young_lawn": (0.100, 0.115, 0.075, 0.255),
    "turf": (0.050, 0.100, 0.045, 0.360),
    "artificial_turf": (0.060, 0.100, 0.060, 0.090),
    "running_track": (0.220, 0.100, 0.080, 0.260),
    "paint": (0.470, 0.470, 0.460, 0.460),
    "roof_white": (0.420, 0.430, 0.440, 0.420),
    "roof_grey": (0.170, 0.175, 0.180, 0.190),
    "roof_dark": (0.075, 0.078, 0.082, 0.090),
    "roof_red": (0.210, 0.110, 0.085, 0.240),
    "roof_metal": (0.330, 0.350, 0.370, 0.340),
    "roof_brown": (0.140, 0.110, 0.090, 0.160),
    "farmyard": (0.150, 0.140, 0.115, 0.220),
}
_CAR_COLOURS = ("roof_white", "roof_dark", "roof_grey", "roof_red", "roof_metal", "steel")

_BRIGHT = (1.0, 1.0, 1.0, 1.0)
_VIGOR = (-0.8, -0.5, -0.8, 1.0)  # more chlorophyll: red/blue down, NIR up
_NCOL = 16  # r g b n | w_lo w_mid w_hi | s_r s_g s_b s_n | stripe amp, kx, ky, (spare) | height


@dataclass(frozen=True, slots=True)
class _When:
    index: int
    date: _dt.date

    @property
    def doy(self) -> int:
        return self.date.timetuple().tm_yday


def _ramp(x: float, a: float, b: float) -> float:
    return min(1.0, max(0.0, (x - a) / (b - a)))


def _mix(a: Sequence[float], b: Sequence[float], f: float) -> tuple[float, ...]:
    return tuple(x * (1 - f) + y * f for x, y in zip(a, b))


def _scaled(c: Sequence[float], k: float) -> tuple[float, ...]:
    return tuple(x * k for x in c)


def _row(
    colour: Sequence[float],
    tex: tuple[float, float, float] = (0.05, 0.04, 0.03),
    signs: Sequence[float] = _BRIGHT,
    stripe: tuple[float, float, float] = (0.0, 10.0, 0.0),
) -> list[float]:
    amp, period, angle = stripe
    # stripes run along ``angle``: the wave advances across them (wavenumbers in rad per metre)
    k = 2 * math.pi / period
    return [*colour, *tex, *signs, amp, -k * math.sin(angle), k * math.cos(angle), 0.0, 0.0]


def _jitter(colour: Sequence[float], u: Sequence[float], amount: float = 0.08) -> tuple[float, ...]:
    """Per-feature variation: overall brightness plus a little per band (from the feature's u)."""
    k = 1 + amount * (2 * u[0] - 1)
    return tuple(c * k * (1 + 0.3 * amount * (2 * u[1 + (i % 3)] - 1)) for i, c in enumerate(colour))


def _field_look(mat: str, u: Sequence[float], angle: float, when: _When) -> list[float]:
    """Agricultural parcels follow a crop calendar, so fields change between dates like real ones."""
    doy = when.doy
    vigor = 0.8 + 0.35 * u[3]
    period = 7.0 + 7.0 * u[4]
    year_shift = ((when.date.year * 7 + int(u[5] * 13)) % 5 - 2) * 4  # planting differs by year
    d = doy - year_shift
    if mat == "field_tilled":  # bare, ploughed on every date (the "tilled_field" look-alike)
        # dry topsoil is lighter: the brightest tilled fields overlap dark cleared sites
        soil = _jitter(_mix(_R["tilled"], _R["stubble"], 0.7 * u[3]), u, 0.12)
        return _row(soil, (0.14, 0.09, 0.05), _BRIGHT, (0.10 + 0.05 * u[2], period, angle))
    if mat == "field_hay":
        f = 0.45 + 0.55 * _ramp(d, 110, 150) - 0.4 * _ramp(d, 270, 300)
        if (d + int(u[2] * 60)) % 50 < 9:  # freshly cut
            f *= 0.55
        colour = _mix(_R["dry_grass"], _scaled(_R["crop"], vigor), f)
        return _row(_jitter(colour, u), (0.16, 0.09, 0.04), _VIGOR, (0.03, 6.0 + 4 * u[4], angle))
    if mat == "field_grain":
        green = _ramp(d, 110, 160) * (1 - _ramp(d, 200, 215))
        golden = _ramp(d, 200, 215) * (1 - _ramp(d, 225, 232))
        soil = _R["tilled"] if d < 110 else _R["stubble"]
        colour = _mix(soil, _scaled(_R["crop"], vigor), green)
        colour = _mix(colour, _R["golden"], golden)
        soil_share = 1 - green - golden
        return _row(_jitter(colour, u), (0.15, 0.09, 0.04), _VIGOR if green > 0.5 else _BRIGHT,
                    (0.09 * soil_share + 0.02, period, angle))
    # row crops (corn / soybean): bare tilled until June, green in summer, stubble after harvest
    green = _ramp(d, 140, 190) * (1 - _ramp(d, 255, 290))
    golden = _ramp(d, 255, 290) * (1 - _ramp(d, 292, 300))
    soil = _R["tilled"] if d < 200 else _R["stubble"]
    colour = _mix(soil, _scaled(_R["crop"], vigor), green)
    colour = _mix(colour, _R["golden"], golden)
    soil_share = max(0.0, 1 - green - golden)
    return _row(_jitter(colour, u, 0.1), (0.16, 0.09, 0.04), _VIGOR if green > 0.5 else _BRIGHT,
                (0.10 * soil_share + 0.02 * green, period if soil_share > 0.5 else 5.0 + 2 * u[4], angle))


def _look(mat: str, u: Sequence[float], angle: float, when: _When) -> list[float]:
    """The table row for one feature on one date."""
    if mat.startswith("field_"):
        return _field_look(mat, u, angle, when)
    doy = when.doy
    leaf = _ramp(doy, 115, 150) * (1 - _ramp(doy, 280, 310))
    if mat == "pasture":
        green = 0.3 + 0.7 * _ramp(doy, 110, 150) - 0.45 * _ramp(doy, 230, 290)
        return _row(_jitter(_mix(_R["dry_grass"], _R["grass"], green), u), (0.18, 0.10, 0.05), _VIGOR)
    if mat == "forest":
        colour = _mix(_R["forest_leafoff"], _R["forest"], leaf)
        return _row(_jitter(colour, u, 0.1), (0.10, 0.12, 0.34), _BRIGHT)
    if mat == "conifer":
        return _row(_jitter(_R["conifer"], u, 0.1), (0.08, 0.1, 0.36), _BRIGHT)
    if mat == "tree":  # single crowns in yards and along streets
        return _row(_jitter(_mix(_R["forest_leafoff"], _R["forest"], leaf), u, 0.15), (0.0, 0.05, 0.25))
    if mat == "water":
        turbid = 0.6 * u[2]
        colour = _mix(_R["water"], (0.06, 0.075, 0.065, 0.03), turbid)
        return _row(_jitter(colour, u, 0.1), (0.12, 0.04, 0.01))
    if mat == "marsh":
        return _row(_jitter(_mix(_R["dry_grass"], _R["marsh"], 0.3 + 0.7 * leaf), u), (0.12, 0.12, 0.06), _VIGOR)
    if mat == "lawn":
        return _row(_jitter(_mix(_R["dry_grass"], _R["lawn"], 0.4 + 0.6 * leaf), u), (0.10, 0.08, 0.05), _VIGOR)
    if mat == "young_lawn":
        return _row(_jitter(_mix(_R["cleared"], _R["young_lawn"], 0.6 + 0.4 * leaf), u), (0.12, 0.1, 0.05), _VIGOR)
    if mat == "field_line":  # 12 cm chalk lines: only a faint brightening of the 2 m pixels
        return _row(_mix(_R["turf"], _R["paint"], 0.35), (0.02, 0.02, 0.02))
    if mat == "turf":
        return _row(_jitter(_R["turf"], u, 0.06), (0.03, 0.03, 0.02), _VIGOR, (0.05, 11.0, angle))
    if mat in ("cleared", "compacted", "topsoil", "excavation"):
        tex = {"cleared": (0.07, 0.09, 0.05), "compacted": (0.05, 0.05, 0.04),
               "topsoil": (0.10, 0.12, 0.10), "excavation": (0.08, 0.10, 0.06)}[mat]
        stripe = (0.035, 12.0 + 6 * u[4], angle) if mat == "cleared" else (0.0, 10.0, 0.0)
        colour = _R[mat]
        if mat == "cleared":  # subsoil colour and moisture differ from site to site
            colour = _mix(colour, _R["compacted"], 0.6 * u[3])
        return _row(_jitter(colour, u, 0.08), tex, _BRIGHT, stripe)
    if mat == "farmyard":
        return _row(_jitter(_mix(_R["farmyard"], _R["grass"], 0.3 * leaf), u), (0.1, 0.12, 0.08))
    if mat.startswith("roof_") or mat in ("concrete", "steel", "paint", "equipment", "sand", "gravel_pile",
                                          "running_track", "artificial_turf", "gravel", "asphalt",
                                          "asphalt_new"):
        tex = (0.04, 0.05, 0.06) if mat in ("gravel", "gravel_pile", "sand") else (0.03, 0.03, 0.025)
        stripe = (0.06, 4.0, angle) if mat == "steel" else (0.0, 10.0, 0.0)
        return _row(_jitter(_R[mat], u, 0.06), tex, _BRIGHT, stripe)
    raise AssertionError(f"unknown material {mat}")


# --------------------------------------------------------------------------------------------
# Ground layout: features in ground coordinates, drawn in order (later features paint over)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Feature:
    geom: Any  # shapely Polygon / MultiPolygon in the world CRS
    mat: str
    u: tuple[float, ...]  # six uniforms: the feature's own look variation
    angle: float = 0.0  # stripe direction (radians, from +x)
    height: float = 0.0  # metres; > 0 casts a shadow


@dataclass(frozen=True, slots=True)
class _Site:
    site_id: str
    kind: str
    polygon: Any
    phase_days: tuple[int, int, int] | None  # ordinal days of prep / active / post starts
    layers: dict  # phase -> tuple[_Feature, ...]; look-alikes use "No Activity" only


@dataclass(frozen=True, slots=True)
class _Layout:
    static: tuple[_Feature, ...]
    sites: tuple[_Site, ...]
    aoi: Any


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> Polygon:
    """A w x h rectangle centred on (cx, cy), its w side along ``angle`` (radians)."""
    c, s = math.cos(angle), math.sin(angle)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return Polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts])


def _part(footprint: Polygon, angle: float, frac: float) -> Polygon:
    """The first ``frac`` of a footprint along its own long axis (a building half built)."""
    c = footprint.centroid
    local = affinity.rotate(footprint, -angle, origin=c, use_radians=True)
    x0, y0, x1, y1 = local.bounds
    piece = box(x0, y0, x0 + (x1 - x0) * frac, y1)
    return affinity.rotate(piece, angle, origin=c, use_radians=True)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float = 0.25, n: int = 40) -> Polygon:
    """An irregular closed shape (lakes, woods, piles): a circle with random low harmonics."""
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rad = np.ones(n)
    for k in range(2, 6):
        rad += rough / k * rng.uniform(0.3, 1.0) * np.sin(k * phi + rng.uniform(0, 2 * np.pi))
    return Polygon(np.c_[cx + r * rad * np.cos(phi), cy + r * rad * np.sin(phi)]).buffer(0)


class _Obstacles:
    """Polygons to keep clear of, with a spatial index rebuilt only when something was added."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.tree: Any = None

    def append(self, geom: Any) -> None:
        self.items.append(geom)
        self.tree = None

    def hit(self, geom: Any) -> bool:
        if not self.items:
            return False
        if self.tree is None:
            self.tree = shapely.STRtree(self.items)
        return self.tree.query(geom, predicate="intersects").size > 0


class _Builder:
    """Builds a world layout deterministically from the spec's seed."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, 1])
        x0, y0 = spec.origin
        self.world = box(x0, y0 - spec.height * spec.gsd, x0 + spec.width * spec.gsd, y0)
        margin = spec.grid_shift_m + 8 * spec.gsd
        self.extent = self.world.buffer(margin, join_style="mitre")
        self.cx, self.cy = self.world.centroid.x, self.world.centroid.y
        self.area_km2 = self.world.area / 1e6
        self.angle = math.radians(self.rng.uniform(-6, 6))
        self.bottom: list[_Feature] = []  # fields, water, woods
        self.roads: list[_Feature] = []
        self.top: list[_Feature] = []  # settlements and look-alikes
        self.road_lines: list[tuple[LineString, float]] = []
        self.blocked = _Obstacles()  # places sites and look-alikes must avoid
        self.road_blocked = _Obstacles()
        self._tilled_candidates: list[int] | None = None

    def u(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.rng.random(6))

    def feat(self, geom: Any, mat: str, angle: float | None = None, height: float = 0.0) -> _Feature:
        return _Feature(geom, mat, self.u(), self.angle if angle is None else angle, height)

    def to_world(self, u: float, v: float) -> tuple[float, float]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * c - v * s, self.cy + u * s + v * c

    # ---- roads and fields -----------------------------------------------------------------

    def grid_lines(self, span: float) -> tuple[list[float], list[float]]:
        lines = []
        for _axis in range(2):
            spacing = self.rng.uniform(700, 1500)
            start = -span + self.rng.uniform(0, spacing)
            pos = np.arange(start, span, spacing)
            pos += self.rng.uniform(-60, 60, size=pos.size)
            lines.append(sorted(float(p) for p in pos))
        return lines[0], lines[1]

    def add_roads_and_fields(self) -> None:
        span = (
            math.hypot(self.world.bounds[2] - self.world.bounds[0], self.world.bounds[3] - self.world.bounds[1]) / 2
            + 200
        )
        us, vs = self.grid_lines(span)
        widths_u = [float(self.rng.choice([5.0, 6.0, 9.0], p=[0.45, 0.3, 0.25])) for _ in us]
        widths_v = [float(self.rng.choice([5.0, 6.0, 9.0], p=[0.45, 0.3, 0.25])) for _ in vs]
        for u_, w in zip(us, widths_u):
            self.add_road(LineString([self.to_world(u_, -span), self.to_world(u_, span)]), w)
        for v_, w in zip(vs, widths_v):
            self.add_road(LineString([self.to_world(-span, v_), self.to_world(span, v_)]), w)
        if self.area_km2 > 8:  # a winding highway across larger worlds
            t = np.linspace(-span, span, 200)
            amp, per, ph = self.rng.uniform(150, 500), self.rng.uniform(2500, 6000), self.rng.uniform(0, 6.3)
            off = self.rng.uniform(-0.3, 0.3) * span
            pts = [self.to_world(float(a), float(off + amp * math.sin(a / per * 6.283 + ph))) for a in t]
            self.add_road(LineString(pts), 12.0, mat="asphalt")
        ucuts = [-span, *us, span]
        vcuts = [-span, *vs, span]
        uw = [0.0, *widths_u, 0.0]
        vw = [0.0, *widths_v, 0.0]
        for i in range(len(ucuts) - 1):
            for j in range(len(vcuts) - 1):
                cell = (ucuts[i] + uw[i] / 2 + 3, vcuts[j] + vw[j] / 2 + 3,
                        ucuts[i + 1] - uw[i + 1] / 2 - 3, vcuts[j + 1] - vw[j + 1] / 2 - 3)
                if not self.extent.intersects(self.local_box(*cell)):
                    continue
                for parcel in self.split(cell, 0):
                    self.add_parcel(parcel)

    def local_box(self, u0: float, v0: float, u1: float, v1: float) -> Polygon:
        return Polygon([self.to_world(u0, v0), self.to_world(u1, v0), self.to_world(u1, v1), self.to_world(u0, v1)])

    def add_road(self, line: LineString, width: float, mat: str | None = None) -> None:
        mat = mat or ("asphalt" if width >= 8 else "gravel")
        poly = line.buffer(width / 2, cap_style="flat").intersection(self.extent)
        if poly.is_empty:
            return
        self.roads.append(self.feat(poly, mat))
        self.road_lines.append((line, width))
        self.road_blocked.append(poly.buffer(10))

    def split(self, cell: tuple[float, float, float, float], depth: int) -> Iterator[tuple[float, float, float, float]]:
        u0, v0, u1, v1 = cell
        w, h = u1 - u0, v1 - v0
        if min(w, h) < 120:
            if min(w, h) > 20:
                yield cell
            return
        if (depth >= 1 and (max(w, h) < 330 or self.rng.random() < 0.12 * depth)) or \
                (depth == 0 and max(w, h) < 1100 and self.rng.random() < 0.12):  # a whole section: pivots
            yield cell
            return
        gap = self.rng.uniform(2, 6)  # grass margin / track between fields
        if w >= h:
            cut = u0 + w * self.rng.uniform(0.3, 0.7)
            yield from self.split((u0, v0, cut - gap / 2, v1), depth + 1)
            yield from self.split((cut + gap / 2, v0, u1, v1), depth + 1)
        else:
            cut = v0 + h * self.rng.uniform(0.3, 0.7)
            yield from self.split((u0, v0, u1, cut - gap / 2), depth + 1)
            yield from self.split((u0, cut + gap / 2, u1, v1), depth + 1)

    def add_parcel(self, cell: tuple[float, float, float, float]) -> None:
        u0, v0, u1, v1 = cell
        w, h = u1 - u0, v1 - v0
        mat = str(self.rng.choice(["field_row", "field_grain", "field_hay", "pasture"], p=[0.4, 0.27, 0.2, 0.13]))
        stripe_angle = self.angle + (0.0 if self.rng.random() < 0.5 else math.pi / 2)
        if min(w, h) > 500 and self.rng.random() < 0.35:  # centre pivot: a circle of crop in a square
            cu, cv = self.to_world((u0 + u1) / 2, (v0 + v1) / 2)
            r = min(w, h) / 2 - 5
            self.bottom.append(self.feat(self.local_box(*cell), "pasture"))
            pivot = Point(cu, cv).buffer(r, quad_segs=32)
            self.bottom.append(_Feature(pivot, mat if mat != "pasture" else "field_row", self.u(), stripe_angle))
            return
        geom = self.local_box(*cell)
        if self.extent.intersects(geom):
            self.bottom.append(_Feature(geom, mat, self.u(), stripe_angle))

    # ---- water and woods ------------------------------------------------------------------

    def random_point(self, inset: float = 0.0) -> tuple[float, float]:
        x0, y0, x1, y1 = self.world.bounds
        return float(self.rng.uniform(x0 + inset, x1 - inset)), float(self.rng.uniform(y0 + inset, y1 - inset))

    def add_water_and_woods(self) -> None:
        n_lakes = self.rng.poisson(0.12 * self.area_km2) + (1 if self.area_km2 > 2 else 0)
        n_ponds = self.rng.poisson(0.6 * self.area_km2)
        for i in range(n_lakes + n_ponds):
            x, y = self.random_point()
            r = self.rng.uniform(70, 320) if i < n_lakes else self.rng.uniform(15, 55)
            lake = _blob(self.rng, x, y, r, rough=0.35)
            self.bottom.append(self.feat(lake.buffer(r * 0.15 + 6), "marsh"))
            self.bottom.append(self.feat(lake, "water"))
            self.blocked.append(lake.buffer(r * 0.15 + 20))
        if self.area_km2 > 8 and self.rng.random() < 0.7:
            x0, y0, x1, y1 = self.extent.bounds
            t = np.linspace(0, 1, 160)
            ys = y0 + (y1 - y0) * t
            xs = self.cx + self.rng.uniform(-0.3, 0.3) * (x1 - x0) + 300 * np.sin(t * self.rng.uniform(8, 14) + 1.3) \
                + 120 * np.sin(t * 37 + self.rng.uniform(0, 6))
            river = LineString(np.c_[xs, ys])
            width = self.rng.uniform(14, 28)
            self.bottom.append(self.feat(river.buffer(width / 2 + 25), "forest", height=12))
            water = river.buffer(width / 2)
            self.bottom.append(self.feat(water, "water"))
            self.blocked.append(river.buffer(width / 2 + 40))
        for _ in range(self.rng.poisson(0.35 * self.area_km2) + 1):
            x, y = self.random_point()
            wood = _blob(self.rng, x, y, self.rng.uniform(60, 300), rough=0.45, n=56)
            self.bottom.append(self.feat(wood, "forest" if self.rng.random() < 0.75 else "conifer", height=14))
        # shelterbelts: tree rows along field edges, typical of the northern plains
        fields = [f for f in self.bottom if f.mat.startswith("field_") and f.geom.geom_type == "Polygon"
                  and len(f.geom.exterior.coords) == 5]
        if fields:
            pick = self.rng.choice(len(fields), size=max(1, len(fields) // 5), replace=False)
            for k in pick:
                coords = list(fields[int(k)].geom.exterior.coords)
                e = int(self.rng.integers(0, 4))
                edge = LineString([coords[e], coords[e + 1]])
                self.bottom.append(
                    self.feat(edge.buffer(self.rng.uniform(4, 7), cap_style="flat"), "forest", height=10)
                )

    # ---- settlements ----------------------------------------------------------------------

    def road_point(self, offset: float) -> tuple[float, float, float] | None:
        """A random point ``offset`` m beside a road inside the world, and the road's direction."""
        if not self.road_lines:
            return None
        for _ in range(50):
            line, width = self.road_lines[int(self.rng.integers(len(self.road_lines)))]
            inside = line.intersection(self.inset(offset + 50))
            if inside.is_empty or inside.length < 50:
                continue
            d = float(self.rng.uniform(0, inside.length))
            p = inside.interpolate(d)
            q = inside.interpolate(min(d + 1.0, inside.length))
            r = inside.interpolate(max(d - 1.0, 0.0))
            ang = math.atan2(q.y - r.y, q.x - r.x)
            side = 1 if self.rng.random() < 0.5 else -1
            nx, ny = -math.sin(ang) * side, math.cos(ang) * side
            dist = offset + width / 2
            return p.x + nx * dist, p.y + ny * dist, ang
        return None

    def free(self, geom: Any) -> bool:
        if not self.inset(20).contains(geom):
            return False
        return not (self.blocked.hit(geom) or self.road_blocked.hit(geom))

    def inset(self, d: float) -> Polygon:
        x0, y0, x1, y1 = self.world.bounds
        return box(x0 + d, y0 + d, x1 - d, y1 - d)

    def house(self, x: float, y: float, w: float, h: float, ang: float, mats: Sequence[str], height: float,
              p: Sequence[float] | None = None) -> None:
        roof = str(self.rng.choice(list(mats), p=p))
        self.top.append(self.feat(_rect(x, y, w, h, ang), roof, angle=ang, height=height))

    def add_villages(self) -> None:
        n = int(round(self.area_km2 / 15)) + (1 if 1.5 < self.area_km2 < 15 and self.rng.random() < 0.6 else 0)
        for _ in range(n):
            size = self.rng.uniform(280, 650)
            for _try in range(30):
                pt = self.road_point(size / 2 + 5)
                if pt is None:
                    break
                x, y, ang = pt
                outline = _rect(x, y, size, size * self.rng.uniform(0.6, 1.0), ang)
                if self.free(outline.buffer(-30)):
                    break
            else:
                continue
            if pt is None:
                break
            self.top.append(self.feat(outline, "lawn"))
            c, s = math.cos(ang), math.sin(ang)
            minx, miny, maxx, maxy = affinity.rotate(outline, -ang, origin=(x, y), use_radians=True).bounds
            spacing = self.rng.uniform(85, 120)
            for v in np.arange(miny + spacing / 2, maxy, spacing):  # streets along the main road
                a = (x + (minx - x) * c - (v - y) * s, y + (minx - x) * s + (v - y) * c)
                b = (x + (maxx - x) * c - (v - y) * s, y + (maxx - x) * s + (v - y) * c)
                street = LineString([a, b])
                self.top.append(self.feat(street.buffer(4, cap_style="flat"), "asphalt"))
                for side in (-1, 1):
                    along = minx + self.rng.uniform(5, 20)
                    while along < maxx - 12:
                        lot = self.rng.uniform(20, 32)
                        hw, hd = self.rng.uniform(9, 15), self.rng.uniform(10, 16)
                        setback = 4 + self.rng.uniform(6, 11) + hd / 2
                        lu, lv = along + hw / 2, v + side * setback
                        hx, hy = x + (lu - x) * c - (lv - y) * s, y + (lu - x) * s + (lv - y) * c
                        if self.rng.random() < 0.88:
                            self.house(hx, hy, hw, hd, ang + self.rng.normal(0, 0.03),
                                       ["roof_dark", "roof_grey", "roof_brown", "roof_red", "roof_white"], 6.0,
                                       [0.35, 0.25, 0.2, 0.12, 0.08])
                        for _t in range(int(self.rng.integers(0, 3))):
                            tu, tv = (
                                lu + self.rng.uniform(-lot / 2, lot / 2),
                                v + side * (setback + self.rng.uniform(10, 16)),
                            )
                            tx, ty = x + (tu - x) * c - (tv - y) * s, y + (tu - x) * s + (tv - y) * c
                            self.top.append(
                                self.feat(
                                    Point(tx, ty).buffer(self.rng.uniform(2.5, 5.5), quad_segs=6), "tree", height=9
                                )
                            )
                        along += lot
            self.blocked.append(outline.buffer(30))

    def add_farmsteads(self) -> None:
        for _ in range(self.rng.poisson(0.35 * self.area_km2)):
            size = self.rng.uniform(60, 110)
            pt = self.road_point(size / 2 + self.rng.uniform(20, 60))
            if pt is None:
                return
            x, y, ang = pt
            yard = _rect(x, y, size, size * self.rng.uniform(0.7, 1.0), ang)
            if not self.free(yard):
                continue
            c, s = math.cos(ang), math.sin(ang)
            self.top.append(self.feat(yard, "farmyard"))
            for _b in range(int(self.rng.integers(2, 6))):
                du, dv = self.rng.uniform(-size / 3, size / 3, 2)
                bw, bh = self.rng.uniform(10, 36), self.rng.uniform(9, 20)
                self.house(x + du * c - dv * s, y + du * s + dv * c, bw, bh, ang,
                           ["roof_red", "roof_metal", "roof_grey", "roof_white"], 7.0, [0.3, 0.35, 0.2, 0.15])
            for _b in range(int(self.rng.integers(0, 5))):
                du, dv = self.rng.uniform(-size / 3, size / 3, 2)
                self.top.append(
                    self.feat(
                        Point(x + du * c - dv * s, y + du * s + dv * c).buffer(self.rng.uniform(3.5, 7), quad_segs=8),
                        "roof_metal",
                        height=10,
                    )
                )
            belt = yard.exterior.buffer(self.rng.uniform(5, 8)).difference(yard)
            self.top.append(
                self.feat(
                    belt.intersection(
                        _rect(x, y, size * 3, size * 3, ang).difference(
                            _rect(x + size * 0.75 * (c + s), y + size * 0.75 * (s - c), size * 1.5, size * 1.5, ang)
                        )
                    ),
                    "forest",
                    height=10,
                )
            )
            self.blocked.append(yard.buffer(25))

    # ---- labelled places ------------------------------------------------------------------

    def place(self, w: float, h: float, offset: float) -> tuple[float, float, float, Polygon] | None:
        for _try in range(120):
            pt = self.road_point(offset + h / 2)
            if pt is None:
                break
            x, y, ang = pt
            ang += math.radians(self.rng.normal(0, 1.5))
            poly = _rect(x, y, w, h, ang)
            if self.free(poly):
                return x, y, ang, poly
        for _try in range(200):
            x, y = self.random_point(max(w, h) / 2 + 30)
            ang = self.angle + math.radians(self.rng.normal(0, 3))
            poly = _rect(x, y, w, h, ang)
            if self.free(poly):
                return x, y, ang, poly
        return None

    def lookalike(self, i: int, kind: str) -> _Site | None:
        sid = f"world{self.spec.seed}_n{i:03d}"
        if kind == "tilled_field":
            if self._tilled_candidates is None:
                # whole, unobstructed parcels: no wood, pond or settlement painted over their inside
                cover = shapely.STRtree([f.geom for f in self.bottom + self.top
                                         if not (f.mat.startswith("field_") or f.mat == "pasture")] or [Point(0, 0)])
                inner = self.inset(20)
                self._tilled_candidates = [
                    k for k, f in enumerate(self.bottom)
                    if f.mat.startswith("field_") and 2e4 < f.geom.area < 2.5e5 and inner.contains(f.geom)
                    and cover.query(f.geom.buffer(-10), predicate="intersects").size == 0]
            candidates = [k for k in self._tilled_candidates
                          if self.bottom[k].mat != "field_tilled" and not self.blocked.hit(self.bottom[k].geom)]
            if not candidates:
                return None
            k = int(self.rng.choice(candidates))
            old = self.bottom[k]
            self.bottom[k] = _Feature(old.geom, "field_tilled", old.u, old.angle, 0.0)
            self.blocked.append(old.geom.buffer(30))
            return _Site(sid, kind, old.geom, None, {"No Activity": ()})
        if kind == "sports_field":
            w, h = self.rng.uniform(100, 110), self.rng.uniform(64, 73)
            track = self.rng.random() < 0.5
            ow, oh = (w + 36, h + 26) if track else (w + 10, h + 10)
            spot = self.place(ow, oh, self.rng.uniform(15, 60))
            if spot is None:
                return None
            x, y, ang, outline = spot
            feats = []
            if track:
                feats.append(self.feat(_rect(x, y, ow, oh, ang).buffer(-1), "running_track"))
            feats.append(
                self.feat(
                    _rect(x, y, w + 6, h + 6, ang), "artificial_turf" if self.rng.random() < 0.35 else "turf", angle=ang
                )
            )
            field_box = _rect(x, y, w, h, ang)
            feats.append(self.feat(field_box.exterior.buffer(0.8), "field_line"))
            c, s = math.cos(ang + math.pi / 2), math.sin(ang + math.pi / 2)
            feats.append(
                self.feat(
                    LineString([(x - c * h / 2, y - s * h / 2), (x + c * h / 2, y + s * h / 2)]).buffer(0.8),
                    "field_line",
                )
            )
            feats.append(self.feat(Point(x, y).buffer(9.15).exterior.buffer(0.8), "field_line"))
            self.blocked.append(outline.buffer(30))
            return _Site(sid, kind, outline, None, {"No Activity": tuple(feats)})
        # parking lot with a big-box store beside it
        w, h = self.rng.uniform(70, 170), self.rng.uniform(45, 110)
        spot = self.place(w, h + 60, self.rng.uniform(10, 40))
        if spot is None:
            return None
        x, y, ang, outline = spot
        c, s = math.cos(ang), math.sin(ang)
        nx, ny = -s, c
        lot = _rect(x - nx * 30, y - ny * 30, w, h, ang)
        feats = [self.feat(outline, "lawn")]
        feats.append(self.feat(_rect(x + nx * (h / 2 - 2), y + ny * (h / 2 - 2), w * 0.8, 56, ang),
                               str(self.rng.choice(["roof_white", "roof_grey", "roof_metal"])), angle=ang, height=8))
        feats.extend(self.parking(lot, x - nx * 30, y - ny * 30, w, h, ang))
        self.blocked.append(outline.buffer(30))
        return _Site(sid, kind, lot, None, {"No Activity": tuple(feats)})

    def parking(self, lot: Polygon, x: float, y: float, w: float, h: float, ang: float) -> list[_Feature]:
        feats = [self.feat(lot, "asphalt" if self.rng.random() < 0.7 else "asphalt_new", angle=ang)]
        c, s = math.cos(ang), math.sin(ang)
        nx, ny = -s, c
        occupancy = self.rng.uniform(0.2, 0.85)
        row = -h / 2 + 7.0
        while row < h / 2 - 5:
            for off in (2.6, 8.2):  # a double row of stalls, then an aisle
                v = row + off
                if v > h / 2 - 3:
                    break
                line = LineString(
                    [(x - c * w / 2 + nx * v, y - s * w / 2 + ny * v), (x + c * w / 2 + nx * v, y + s * w / 2 + ny * v)]
                )
                feats.append(self.feat(line.buffer(0.35, cap_style="flat"), "paint"))
                along = -w / 2 + 2
                while along < w / 2 - 2:
                    if self.rng.random() < occupancy:
                        cx = x + c * along + nx * (v + 2.6)
                        cy = y + s * along + ny * (v + 2.6)
                        feats.append(
                            self.feat(
                                _rect(cx, cy, 1.9, 4.6, ang + math.pi / 2),
                                str(self.rng.choice(_CAR_COLOURS)),
                                height=1.5,
                            )
                        )
                    along += 2.7
            row += 18.0
        return feats

    def construction(self, i: int, days: tuple[int, int, int]) -> _Site | None:
        sid = f"world{self.spec.seed}_s{i:03d}"
        w, h = self.rng.uniform(140, 400), self.rng.uniform(100, 300)
        if w < h:
            w, h = h, w
        spot = self.place(w, h, self.rng.uniform(15, 70))
        if spot is None:
            return None
        x, y, ang, poly = spot
        c, s = math.cos(ang), math.sin(ang)
        nx, ny = -s, c
        if self.road_lines:  # turn the site's frame so its road side is -v
            lines = shapely.MultiLineString([rl[0] for rl in self.road_lines])
            if lines.distance(Point(x + nx * h / 2, y + ny * h / 2)) < lines.distance(
                Point(x - nx * h / 2, y - ny * h / 2)
            ):
                ang += math.pi
                c, s, nx, ny = -c, -s, -nx, -ny

        def at(u: float, v: float) -> tuple[float, float]:
            return x + u * c + v * nx, y + u * s + v * ny

        if self.rng.random() < 0.25:  # an L-shaped site: one back corner stays as it was
            cw, ch = w * self.rng.uniform(0.3, 0.5), h * self.rng.uniform(0.3, 0.5)
            side = 1 if self.rng.random() < 0.5 else -1
            poly = poly.difference(_rect(*at(side * (w - cw) / 2, (h - ch) / 2), cw + 0.5, ch + 0.5, ang))

        # access road from the site edge to the nearest road centreline
        edge_mid = Point(at(self.rng.uniform(-w / 3, w / 3), -h / 2))
        road = min(self.road_lines, key=lambda rl: rl[0].distance(edge_mid))[0] if self.road_lines else None
        access = None
        if road is not None and road.distance(edge_mid) < 150:
            access = LineString([edge_mid, road.interpolate(road.project(edge_mid))]).buffer(4, cap_style="flat")
        plan = str(self.rng.choice(["warehouse", "houses", "commercial"], p=[0.4, 0.35, 0.25]))
        buildings: list[Polygon] = []
        if plan == "warehouse":
            for k in range(int(self.rng.integers(1, 3))):
                bw, bh = w * self.rng.uniform(0.35, 0.6), h * self.rng.uniform(0.3, 0.5)
                bx, by = at((-1 if k == 0 else 1) * w * 0.2 + self.rng.uniform(-5, 5), h * 0.12)
                buildings.append(_rect(bx, by, bw, bh, ang))
        elif plan == "houses":
            for v in np.arange(-h / 2 + 25, h / 2 - 15, 45):
                for u in np.arange(-w / 2 + 14, w / 2 - 10, self.rng.uniform(20, 26)):
                    buildings.append(_rect(*at(u, v), self.rng.uniform(9, 13), self.rng.uniform(10, 15), ang))
        else:
            for _k in range(int(self.rng.integers(1, 4))):
                buildings.append(_rect(*at(self.rng.uniform(-w / 3, w / 3), h * self.rng.uniform(0.1, 0.3)),
                                       self.rng.uniform(25, 60), self.rng.uniform(20, 40), ang))
        keep: list[Polygon] = []
        inner = poly.buffer(-6)
        for b in buildings:
            if inner.contains(b) and not (keep and shapely.intersects(np.array(keep), b.buffer(4)).any()):
                keep.append(b)
        if not keep:  # every site builds something
            keep.append(_rect(*at(0, h * 0.08), w * 0.45, h * 0.35, ang))
        buildings = keep
        streets = (
            [
                LineString([at(-w / 2 + 4, v - 22), at(w / 2 - 4, v - 22)])
                .buffer(4, cap_style="flat")
                .intersection(poly)
                for v in np.arange(-h / 2 + 25, h / 2 - 15, 45)
            ]
            if plan == "houses"
            else []
        )

        tracks = []
        for _t in range(int(self.rng.integers(3, 8))):
            pts = [at(self.rng.uniform(-w / 2, w / 2), self.rng.uniform(-h / 2, h / 2))]
            for _k in range(3):
                px, py = pts[-1]
                step = self.rng.uniform(30, 120)
                a = ang + self.rng.choice([0, math.pi / 2, math.pi, -math.pi / 2]) + self.rng.normal(0, 0.2)
                pts.append((px + step * math.cos(a), py + step * math.sin(a)))
            tracks.append(LineString(pts).buffer(self.rng.uniform(1.6, 2.6)).intersection(poly))
        piles = [
            _blob(
                self.rng, *at(self.rng.uniform(-w / 2 + 15, w / 2 - 15), h / 2 - 12), self.rng.uniform(6, 14), 0.5, 16
            )
            for _p in range(int(self.rng.integers(2, 6)))
        ]
        machines = [
            _rect(
                *at(self.rng.uniform(-w / 2.5, w / 2.5), self.rng.uniform(-h / 2.5, h / 2.5)),
                3.2,
                7,
                ang + self.rng.uniform(0, 3.1),
            )
            for _m in range(int(self.rng.integers(1, 5)))
        ]
        trailer = _rect(*at(float(self.rng.uniform(-w / 3, w / 3)), -h / 2 + 9), 12, 3.5, ang)
        pond = _rect(*at(w / 2 - 20, -h / 2 + 16), 26, 18, ang) if self.rng.random() < 0.5 else None

        f = self.feat
        prep = [f(poly, "cleared", angle=ang)]
        prep += [f(t, "compacted") for t in tracks if not t.is_empty]
        prep += [f(p.intersection(poly), "topsoil", height=3) for p in piles]
        prep += [f(m, "equipment", height=3) for m in machines]
        prep += [f(trailer, "roof_white", height=3)]
        if access is not None:
            prep.insert(0, f(access, "gravel"))
        if pond is not None:
            prep.append(f(pond, "water"))

        active = [f(poly, "cleared", angle=ang)]
        if access is not None:
            active.insert(0, f(access, "gravel"))
        active += [f(t, "compacted") for t in tracks[:2] if not t.is_empty]
        active += [f(st, "gravel") for st in streets]
        if plan != "houses":
            active.append(
                f(
                    LineString([at(-w / 2 + 5, -h / 2 + 20), at(w / 2 - 5, -h / 2 + 20)]).buffer(4, cap_style="flat"),
                    "gravel",
                )
            )
        for b in buildings:
            # a graded gravel pad under every footprint, then the footprint's current state
            active.append(f(b.buffer(4, join_style="mitre"), "gravel"))
            r = self.rng.random()
            if r < 0.4:
                active.append(f(b, "concrete", height=0.5))
            elif r < 0.65:
                active.append(f(b, "concrete", height=0.5))
                active.append(f(_part(b, ang, float(self.rng.uniform(0.4, 1.0))), "steel", angle=ang, height=6))
            elif r < 0.82:  # slab with part of the roof on
                active.append(f(b, "concrete", height=0.5))
                part = _part(b, ang, float(self.rng.uniform(0.3, 0.7)))
                active.append(f(part, str(self.rng.choice(["roof_white", "roof_grey"])), angle=ang, height=7))
            else:
                active.append(f(b.buffer(1, join_style="mitre"), "excavation", height=0.0))
        for _p in range(int(self.rng.integers(3, 9))):
            px, py = at(self.rng.uniform(-w / 2 + 10, w / 2 - 10), self.rng.uniform(-h / 2 + 10, h / 2 - 10))
            active.append(f(_blob(self.rng, px, py, self.rng.uniform(3, 9), 0.4, 14).intersection(poly),
                            str(self.rng.choice(["sand", "gravel_pile", "topsoil"])), height=2.5))
        active += [f(m, "equipment", height=3) for m in machines]
        active.append(f(trailer, "roof_white", height=3))

        post = [f(poly, "young_lawn")]
        if access is not None:
            post.insert(0, f(access, "asphalt_new"))
        if plan == "houses":
            post += [f(st, "asphalt_new") for st in streets]
        else:
            lot = _rect(*at(0, -h / 2 + 22), w - 20, 30, ang)
            post.extend(self.parking(lot, *at(0, -h / 2 + 22), w - 20, 30, ang))
        if self.rng.random() < 0.3:
            post.append(f(_rect(*at(w / 2 - 30, h / 2 - 25), 40, 30, ang), "cleared", angle=ang))
        roofs = (
            ["roof_white", "roof_grey", "roof_metal"] if plan != "houses" else ["roof_dark", "roof_grey", "roof_brown"]
        )
        for b in buildings:
            post.append(f(b, str(self.rng.choice(roofs)), angle=ang, height=5 if plan == "houses" else 9))
        for _t in range(int(self.rng.integers(4, 14))):
            tx, ty = at(self.rng.uniform(-w / 2 + 5, w / 2 - 5), self.rng.choice([-h / 2 + 4, h / 2 - 4]))
            tree = Point(tx, ty).buffer(self.rng.uniform(1.5, 3.0), quad_segs=6)
            if poly.contains(tree):
                post.append(f(tree, "tree", height=4))
        self.blocked.append(poly.buffer(40))
        layers = {
            "Site Preparation": tuple(prep),
            "Active Construction": tuple(active),
            "Post Construction": tuple(post),
        }
        return _Site(sid, "construction", poly, days, layers)

    def aoi(self) -> Polygon:
        """An irregular polygon covering most of the world (not its bounding box)."""
        x0, y0, x1, y1 = self.world.bounds
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rad = 1 + 0.08 * np.sin(3 * phi + self.rng.uniform(0, 6)) + 0.05 * np.sin(5 * phi + self.rng.uniform(0, 6))
        sq = 1 / np.maximum(np.abs(np.cos(phi)), np.abs(np.sin(phi)))  # a squircle hugging the square
        rx, ry = (x1 - x0) / 2 * 0.9, (y1 - y0) / 2 * 0.9
        pts = np.c_[
            self.cx + rx * np.cos(phi) * np.minimum(sq, 1.3) * rad,
            self.cy + ry * np.sin(phi) * np.minimum(sq, 1.3) * rad,
        ]
        return Polygon(pts).buffer(0).intersection(self.inset(2 * self.spec.gsd))


def _site_timelines(spec: WorldSpec, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Staggered starts: each site is caught in Site Preparation or Active Construction on one date."""
    days = [_dt.date.fromisoformat(d).toordinal() for d in spec.dates]
    n = len(days)
    targets = list(range(1, n)) if n > 1 else [0]
    order = [targets[i % len(targets)] for i in range(spec.n_sites)]
    rng.shuffle(order)
    out = []
    for k in order:
        if rng.random() < 0.5:  # seen in preparation on date k
            prep = days[k] - int(rng.integers(3, 45))
            active = prep + int(rng.integers(60, 170))
        else:  # seen under construction on date k
            active = days[k] - int(rng.integers(10, 150))
            prep = active - int(rng.integers(45, 130))
        post = max(active + int(rng.integers(150, 450)), days[k] + 1)
        out.append((prep, active, post))
    return out


def _site_spans(spec: WorldSpec, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Sites that start between two dates and stay active for at least three revisits.

    Each site is first seen (in preparation) on date ``first`` >= 1, so it is seen bare of
    activity at least once; it ends (Post Construction) between two later dates, at least three
    revisits on, or after the last date (still going). Ends one date before the last are avoided:
    a single post-construction view cannot confirm an end."""
    days = [_dt.date.fromisoformat(d).toordinal() for d in spec.dates]
    n = len(days)
    firsts = [1 + (i % (n - 4)) for i in range(spec.n_sites)]
    rng.shuffle(firsts)
    out = []
    for first in firsts:
        prep = days[first] - int(rng.integers(3, max(4, min(40, days[first] - days[first - 1]))))
        ends = [j for j in range(first + 3, n - 1)] + [n]
        j = int(rng.choice(ends))
        post = days[j] - int(rng.integers(3, max(4, min(40, days[j] - days[j - 1])))) if j < n else days[-1] + 180
        active = prep + int(rng.integers(30, 90))
        active = min(active, (prep + post) // 2)
        out.append((prep, active, post))
    return out


def _phase(days: tuple[int, int, int] | None, day: int) -> str:
    if days is None or day < days[0]:
        return "No Activity"
    if day < days[1]:
        return "Site Preparation"
    if day < days[2]:
        return "Active Construction"
    return "Post Construction"


def _build_layout(spec: WorldSpec) -> _Layout:
    b = _Builder(spec)
    b.add_roads_and_fields()
    b.add_water_and_woods()
    b.add_villages()
    b.add_farmsteads()
    sites: list[_Site] = []
    # Sites first (they need room near roads), then the look-alikes, in a fixed order.
    schedule = _site_spans if spec.schedule == "spans" else _site_timelines
    timelines = schedule(spec, np.random.default_rng([spec.seed, 2]))
    for i, days in enumerate(timelines):
        site = b.construction(i + 1, days)
        if site is None:
            log.warning("world %s: no room for construction site %d; generated %d", spec.seed, i + 1, len(sites))
            break
        sites.append(site)
    kinds = ("tilled_field", "sports_field", "parking")
    for i in range(spec.n_lookalikes):
        site = b.lookalike(i + 1, kinds[i % 3])
        if site is None:
            log.warning("world %s: no room for look-alike %d (%s)", spec.seed, i + 1, kinds[i % 3])
        else:
            sites.append(site)
    static = tuple(b.bottom + b.roads + b.top)
    return _Layout(static, tuple(sites), b.aoi())


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DateScene:
    """Everything needed to render one date: features, their look table, clouds, nodata edge, grid."""

    when: _When
    transform: Affine
    width: int
    height: int
    geoms: tuple[Any, ...]  # feature k+1 burns value k+1 (0 is the background pasture)
    table: np.ndarray  # (n+1, _NCOL) float32
    tree: Any  # STRtree over geoms
    cloud_seed: int
    cloud_cell: float
    cloud_threshold: float  # inf: no cloud
    nodata: tuple[float, ...] | None  # (nx, ny, c, jag) pixel half-plane, or None
    gain: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # per band: illumination / calibration of the date
    haze: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)  # per band: path radiance added by the atmosphere


def _date_features(layout: _Layout, when: _When) -> list[_Feature]:
    feats = list(layout.static)
    day = when.date.toordinal()
    for site in layout.sites:
        phase = _phase(site.phase_days, day)
        feats.extend(site.layers.get(phase, ()))
    return [f for f in feats if not f.geom.is_empty]


def _cloud_field(seed: int, xs: np.ndarray, ys: np.ndarray, cell: float, step: int = 1) -> np.ndarray:
    """Cloud density at columns ``xs`` x rows ``ys`` (evenly spaced).

    Clouds have no detail finer than ~cell/16 (> 30 m), so with ``step`` > 1 the field is evaluated
    every ``step`` pixels and interpolated, which is 4-5x cheaper than five full-resolution octaves.
    """
    if step == 1 or xs.size < 2 * step or ys.size < 2 * step:
        return _fractal(seed, xs, ys, cell, 5)
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    nxc, nyc = (xs.size - 1) // step + 2, (ys.size - 1) // step + 2
    coarse = _fractal(seed, xs[0] + dx * step * np.arange(nxc), ys[0] + dy * step * np.arange(nyc), cell, 5)
    fc = np.arange(xs.size) / step
    j0 = fc.astype(np.int64)
    wx = (fc - j0).astype(np.float32)
    along = coarse[:, j0] * (1 - wx) + coarse[:, j0 + 1] * wx
    fr = np.arange(ys.size) / step
    i0 = fr.astype(np.int64)
    wy = (fr - i0).astype(np.float32)[:, None]
    return along[i0] * (1 - wy) + along[i0 + 1] * wy


_CLOUD_SOFT = 0.05


def _calibrate_clouds(seed: int, transform: Affine, width: int, height: int, cell: float, target: float) -> float:
    """The noise threshold at which cloud + shadow cover ``target`` of the scene (on a coarse grid)."""
    if target <= 0:
        return math.inf
    step = 8
    xs = transform.c + (np.arange(0, width, step) + 0.5) * transform.a
    ys = transform.f + (np.arange(0, height, step) + 0.5) * transform.e
    ox, oy = _SHADOW_PER_M[0] * _CLOUD_HEIGHT_M, _SHADOW_PER_M[1] * _CLOUD_HEIGHT_M
    cloud = _cloud_field(seed, xs, ys, cell)
    shade = _cloud_field(seed, xs - ox, ys - oy, cell)
    both = np.maximum(cloud, shade)
    return float(np.quantile(both, 1 - target))


def _prepare_date(spec: WorldSpec, layout: _Layout, k: int) -> _DateScene:
    when = _When(k, _dt.date.fromisoformat(spec.dates[k]))
    rng = np.random.default_rng([spec.seed, 7, k])
    if k == 0:
        dx = dy = 0.0
        dw = dh = 0
    else:
        dx, dy = (float(v) for v in rng.uniform(-spec.grid_shift_m, spec.grid_shift_m, 2))
        dw, dh = (int(v) for v in rng.integers(-1, 2, 2))
    transform = Affine(spec.gsd, 0.0, spec.origin[0] + dx, 0.0, -spec.gsd, spec.origin[1] + dy)
    width, height = spec.width + dw, spec.height + dh
    feats = _date_features(layout, when)
    table = np.empty((len(feats) + 1, _NCOL), np.float32)
    table[0] = _look("pasture", (0.5, 0.5, 0.5, 0.5, 0.5, 0.5), 0.0, when)
    for i, f in enumerate(feats):
        table[i + 1] = _look(f.mat, f.u, f.angle, when)
        table[i + 1, 15] = f.height
    geoms = tuple(f.geom for f in feats)
    extent_m = min(width, height) * spec.gsd
    cell = float(np.clip(extent_m / 2.5, 500, 3000))
    cloud_seed = spec.seed * 1000 + 17 * k + 5
    target = spec.cloud_fraction * float(rng.uniform(0.6, 1.4)) if spec.cloud_fraction > 0 else 0.0
    threshold = _calibrate_clouds(cloud_seed, transform, width, height, cell, min(target, 0.9))
    nodata = None
    if spec.nodata_edge and k in _nodata_dates(spec):
        corner = int(rng.integers(0, 4))
        frac_a, frac_b = rng.uniform(0.15, 0.55, 2)
        # a slanted swath edge cutting one corner: a line through two points on adjacent sides
        xa, yb = frac_a * width, frac_b * height
        pts = {0: ((xa, 0), (0, yb)), 1: ((width - xa, 0), (width, yb)),
               2: ((xa, height), (0, height - yb)), 3: ((width - xa, height), (width, height - yb))}[corner]
        (ax, ay), (bx, by) = pts
        nx_, ny_ = by - ay, -(bx - ax)
        norm = math.hypot(nx_, ny_)
        nx_, ny_ = nx_ / norm, ny_ / norm
        cx_, cy_ = {0: (0, 0), 1: (width, 0), 2: (0, height), 3: (width, height)}[corner]
        if nx_ * (cx_ - ax) + ny_ * (cy_ - ay) < 0:  # the corner side is the nodata side
            nx_, ny_ = -nx_, -ny_
        nodata = (nx_, ny_, -(nx_ * ax + ny_ * ay), float(spec.seed * 97 + k))
    tree = shapely.STRtree(list(geoms))
    # every acquisition has its own sun, atmosphere and calibration: brightness alone must not
    # give change away
    common = float(rng.normal(0, 0.035))
    gain = tuple(float(1 + common + rng.normal(0, 0.012)) for _ in range(4))
    haze_level = float(rng.uniform(0.0, 0.014))
    haze = tuple(haze_level * k for k in (0.7, 0.85, 1.0, 0.25))  # Rayleigh: bluer, little in NIR
    return _DateScene(when, transform, width, height, geoms, table, tree,
                      cloud_seed, cell, threshold, nodata, gain, haze)


def _nodata_dates(spec: WorldSpec) -> set[int]:
    n = len(spec.dates)
    picked = {k for k in range(n) if (k + spec.seed) % 2 == 1}
    return picked or {n - 1}


def _burn(tree: Any, geoms: Sequence[Any], values: Callable[[int], int] | None, transform: Affine,
          shape: tuple[int, int], dtype: str) -> np.ndarray:
    h, w = shape
    bounds = box(transform.c, transform.f + transform.e * h, transform.c + transform.a * w, transform.f)
    hits = np.sort(tree.query(bounds))
    if hits.size == 0:
        return np.zeros(shape, dtype)
    shapes = ((geoms[i], (int(i) + 1) if values is None else values(int(i))) for i in hits)
    return rasterio.features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype=dtype)


_HALO = 8  # pixels; longer than the longest cast shadow (14 m trees -> 12 m at 2 m/px)


def _cast_shadows(heights: np.ndarray, gsd: float) -> np.ndarray:
    """Pixels in the shadow of taller pixels nearer the sun (march along the sun direction).

    Working on the painted height map (not on polygons) means hidden objects cast no shadows.
    """
    h, w = heights.shape
    shade = np.zeros((h, w), bool)
    if not heights.any():
        return shade
    # towards the sun in pixel steps: east is +col, south is +row
    scol, srow = math.sin(_SUN_AZIMUTH), -math.cos(_SUN_AZIMUTH)
    rise = gsd * math.tan(_SUN_ELEVATION)  # height of the sun ray above the ground per pixel step
    reach = min(float(heights.max()) / rise, _HALO - 1)
    seen: set[tuple[int, int]] = set()
    for step in np.arange(0.5, reach + 0.5, 0.5):
        dc, dr = int(round(step * scol)), int(round(step * srow))
        if (dc, dr) in seen or (dc, dr) == (0, 0):
            continue
        seen.add((dc, dr))
        dist = math.hypot(dc, dr)
        src = heights[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)]
        dst = heights[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
        view = shade[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
        view |= src > dst + np.float32(dist * rise)
    return shade


def _render(scene: _DateScene, spec: WorldSpec, row0: int, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (4, nrows, width) float32 and the mask classes (nrows, width) for a row strip."""
    t = scene.transform
    width = scene.width
    # render a halo all round so the point-spread blur and cast shadows have real neighbours
    halo = _HALO
    halo_t = t @ Affine.translation(-halo, row0 - halo)
    hh, hw = nrows + 2 * halo, width + 2 * halo
    xs = halo_t.c + (np.arange(hw) + 0.5) * t.a
    ys = halo_t.f + (np.arange(hh) + 0.5) * t.e
    idx = _burn(scene.tree, scene.geoms, None, halo_t, (hh, hw), "int32")
    tab = scene.table
    seed = spec.seed
    n_lo = _fractal(seed * 10 + 1, xs, ys, 220.0, 2)
    n_mid = _fractal(seed * 10 + 2, xs, ys, 26.0, 2)
    mod = np.take(tab[:, 4], idx) * n_lo
    mod += np.take(tab[:, 5], idx) * n_mid
    del n_lo, n_mid
    n_hi = _value_noise(seed * 10 + 3, xs, ys, 4.0)
    mod += np.take(tab[:, 6], idx) * n_hi
    del n_hi
    # plough / mowing / grading stripes: a ground-fixed wave (relative to the world origin so
    # float32 keeps centimetre precision)
    xl = (xs - spec.origin[0]).astype(np.float32)
    yl = (ys - spec.origin[1]).astype(np.float32)
    phase = np.take(tab[:, 12], idx) * xl[None, :]
    phase += np.take(tab[:, 13], idx) * yl[:, None]
    stripe = np.sin(phase)
    phase *= 2
    phase += np.float32(0.7)
    stripe += np.float32(0.35) * np.sin(phase)
    stripe *= np.take(tab[:, 11], idx)
    stripe += 1
    del phase
    refl = np.empty((4, hh, hw), np.float32)
    for b in range(4):
        band = np.take(tab[:, 7 + b], idx) * mod
        band += stripe
        band *= np.take(tab[:, b], idx)
        refl[b] = band
    del mod, stripe, band
    shade = _cast_shadows(np.take(tab[:, 15], idx), t.a)
    del idx
    if shade.any():
        for b, keep in enumerate((0.38, 0.40, 0.48, 0.33)):  # skylight keeps shadows bluish
            refl[b][shade] *= keep
    del shade
    # point-spread blur (separable 1-2-1-ish): edges get mixed pixels like a real sensor
    k_side, k_mid = np.float32(0.17), np.float32(0.66)
    refl = refl[:, halo - 1:hh - halo + 1, halo - 1:hw - halo + 1]
    refl = k_mid * refl[:, :, 1:-1] + k_side * (refl[:, :, :-2] + refl[:, :, 2:])
    refl = k_mid * refl[:, 1:-1, :] + k_side * (refl[:, :-2, :] + refl[:, 2:, :])
    xs, ys = xs[halo:-halo], ys[halo:-halo]
    mask = np.zeros((nrows, width), np.uint8)
    if math.isfinite(scene.cloud_threshold):
        ox, oy = _SHADOW_PER_M[0] * _CLOUD_HEIGHT_M, _SHADOW_PER_M[1] * _CLOUD_HEIGHT_M
        thr = np.float32(scene.cloud_threshold)
        # rows of a strip start on a multiple of 4, so the coarse samples line up across strips
        shade_n = _cloud_field(scene.cloud_seed, xs - ox, ys - oy, scene.cloud_cell, 4)
        in_shadow = shade_n > thr
        if in_shadow.any():
            a_s = np.clip((shade_n - thr) / np.float32(_CLOUD_SOFT), 0, 1)
            for b, dark in enumerate((0.62, 0.60, 0.52, 0.66)):
                refl[b] *= 1 - dark * a_s
            mask[in_shadow] = MASK_SHADOW
            del a_s
        del shade_n, in_shadow
        cloud_n = _cloud_field(scene.cloud_seed, xs, ys, scene.cloud_cell, 4)
        in_cloud = cloud_n > thr
        if in_cloud.any():
            a_c = np.clip((cloud_n - thr) / np.float32(_CLOUD_SOFT), 0, 1)
            thick = 0.82 + 0.3 * np.clip((cloud_n - thr) / np.float32(0.25), 0, 1)
            detail = 1 + 0.06 * _value_noise(scene.cloud_seed + 1, xs, ys, 30.0)
            for b, white in enumerate((0.56, 0.57, 0.61, 0.55)):
                refl[b] = refl[b] * (1 - a_c) + np.float32(white) * thick * detail * a_c
            mask[in_cloud] = MASK_CLOUD
            del a_c, thick, detail
        del cloud_n, in_cloud
    rng = np.random.default_rng([spec.seed, 11, scene.when.index, row0])
    for b in range(4):
        refl[b] *= np.float32(scene.gain[b])
        refl[b] += np.float32(scene.haze[b])
        noise = rng.standard_normal((nrows, width), dtype=np.float32)
        refl[b] += noise * (np.float32(0.0025) + np.float32(0.008) * refl[b])
    if scene.nodata is not None:
        nx_, ny_, c, jag_seed = scene.nodata
        cols = np.arange(width, dtype=np.float64) + 0.5
        rows = np.arange(row0, row0 + nrows, dtype=np.float64) + 0.5
        d = (nx_ * cols + c).astype(np.float32)[None, :] + (ny_ * rows).astype(np.float32)[:, None]
        if (np.abs(d) < 40).any():  # a jagged edge (only strips near the edge pay for it)
            d += 6 * _value_noise(int(jag_seed), cols, rows, 48.0)
            d += 2 * _value_noise(int(jag_seed) + 1, cols, rows, 7.0)
        mask[d > 0] = MASK_NODATA
    return refl, mask


def _quantise(refl: np.ndarray, mask: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint16":
        out = np.clip(np.rint(refl * np.float32(_UINT16_SCALE)), 1, 10000).astype(np.uint16)
    else:
        out = np.clip(np.rint(refl * np.float32(_UINT8_SCALE)), 1, 255).astype(np.uint8)
    nodata = mask == MASK_NODATA
    if nodata.any():
        out *= ~nodata
    return out


def _udm2(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((8,) + mask.shape, np.uint8)
    valid = mask != MASK_NODATA
    out[0] = mask == MASK_CLEAR
    out[2] = mask == MASK_SHADOW
    out[5] = mask == MASK_CLOUD
    out[6] = np.where(valid, np.where(mask == MASK_CLEAR, 92, 68), 0)
    out[7] = ~valid  # legacy UDM bit 0: blackfill
    return out


def _gtiff_profile(spec: WorldSpec, width: int, height: int, transform: Affine, count: int, dtype: str) -> dict:
    return {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": f"EPSG:{spec.epsg}", "transform": transform, "tiled": True,
        "blockxsize": spec.tile, "blockysize": spec.tile, "compress": spec.compress,
        "interleave": "pixel", "bigtiff": "IF_SAFER",
    }


def _write_scene(spec: WorldSpec, scene: _DateScene, path: Path, mask_path: Path | None,
                 strip_rows: int, tags: dict[str, str]) -> tuple[float, float]:
    """Write the scene (and its mask) strip by strip; returns (cloud+shadow / valid, nodata / all)."""
    try:
        return _write_scene_files(spec, scene, path, mask_path, strip_rows, tags)
    except (OSError, rasterio.errors.RasterioError) as exc:
        for p in (path, mask_path):
            if p is not None:
                p.with_name(p.name + ".partial").unlink(missing_ok=True)
        raise OutputError(f"Cannot write the synthetic scene {path}: {exc}",
                          hint=f"check free disk space and write permission in {path.parent}") from None


def _write_scene_files(spec: WorldSpec, scene: _DateScene, path: Path, mask_path: Path | None,
                       strip_rows: int, tags: dict[str, str]) -> tuple[float, float]:
    date = scene.when.date
    prof = _gtiff_profile(spec, scene.width, scene.height, scene.transform, 4, spec.dtype)
    prof.update(nodata=0, photometric="RGB", predictor=2 if spec.compress.lower() in ("deflate", "lzw", "zstd") else 1)
    counts = np.zeros(256, np.int64)
    tmp = path.with_name(path.name + ".partial")
    mtmp = mask_path.with_name(mask_path.name + ".partial") if mask_path else None
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        with rasterio.open(tmp, "w", **prof) as dst:
            dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)
            for i, name in enumerate(BAND_NAMES, 1):
                dst.set_band_description(i, name)
            dst.update_tags(TIFFTAG_DATETIME=date.strftime("%Y:%m:%d") + " 10:30:00", **tags)
            mdst = None
            if mtmp is not None:
                n = 8 if spec.mask_kind == "udm2" else 1
                mprof = _gtiff_profile(spec, scene.width, scene.height, scene.transform, n, "uint8")
                mprof.update(predictor=1)
                if spec.mask_kind == "classes":
                    mprof.update(nodata=MASK_NODATA)
                mdst = rasterio.open(mtmp, "w", **mprof)
                if spec.mask_kind == "udm2":
                    for i, name in enumerate(
                        ("clear", "snow", "shadow", "light_haze", "heavy_haze", "cloud", "confidence", "udm1"), 1
                    ):
                        mdst.set_band_description(i, name)
                else:
                    mdst.set_band_description(1, "mask")
                    mdst.update_tags(CLASSES="0=clear,1=cloud,2=shadow,255=nodata")
                mdst.update_tags(TIFFTAG_DATETIME=date.strftime("%Y:%m:%d") + " 10:30:00")
            try:
                for row0 in range(0, scene.height, strip_rows):
                    n = min(strip_rows, scene.height - row0)
                    refl, mask = _render(scene, spec, row0, n)
                    win = Window(0, row0, scene.width, n)
                    dst.write(_quantise(refl, mask, spec.dtype), window=win)
                    del refl
                    counts += np.bincount(mask.ravel(), minlength=256)
                    if mdst is not None:
                        mdst.write(_udm2(mask) if spec.mask_kind == "udm2" else mask[None], window=win)
            finally:
                if mdst is not None:
                    mdst.close()
    if mtmp is not None and mask_path is not None:
        with rasterio.open(mtmp, "r+") as mdst:
            # decimated reads of the mask (a cheap screening prefilter) come from these overviews
            mdst.build_overviews([2, 4, 8, 16], rasterio.enums.Resampling.nearest)
        os.replace(mtmp, mask_path)
    os.replace(tmp, path)
    total = counts.sum()
    nod = counts[MASK_NODATA]
    valid = max(total - nod, 1)
    return float((counts[MASK_CLOUD] + counts[MASK_SHADOW]) / valid), float(nod / max(total, 1))


# --------------------------------------------------------------------------------------------
# Labels, AOI, manifest
# --------------------------------------------------------------------------------------------


def _to_wgs84(epsg: int) -> Callable[[Any], Any]:
    from pyproj import Transformer

    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)

    def apply(geom: Any) -> Any:
        return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    return apply


def _round_coords(obj: Any, nd: int) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_round_coords(o, nd) for o in obj]
    return round(float(obj), nd)


def _geojson(features: list[tuple[Any, dict[str, Any]]], epsg: int, name: str) -> dict[str, Any]:
    to_wgs = _to_wgs84(epsg)
    out = []
    for geom, props in features:
        g = mapping(shapely.orient_polygons(to_wgs(geom)) if hasattr(shapely, "orient_polygons") else to_wgs(geom))
        g = {"type": g["type"], "coordinates": _round_coords(g["coordinates"], 7)}
        out.append({"type": "Feature", "properties": props, "geometry": g})
    return {"type": "FeatureCollection", "name": name, "features": out}


def _valid_fraction(scene_path: Path, mask_path: Path | None, geom: Any) -> float:
    """The share of a polygon's pixels that are clear on a date (not nodata, cloud or shadow)."""
    with rasterio.open(mask_path or scene_path) as src:
        win = rasterio.features.geometry_window(src, [mapping(geom)])
        inside = rasterio.features.geometry_mask([mapping(geom)], out_shape=(int(win.height), int(win.width)),
                                                 transform=src.window_transform(win), invert=True)
        if mask_path is None:
            data = src.read(1, window=win)
            ok = data != 0
        elif src.count == 8:
            ok = src.read(1, window=win) == 1
        else:
            ok = src.read(1, window=win) == MASK_CLEAR
    n = int(inside.sum())
    return round(float(ok[inside].sum()) / n, 4) if n else 0.0


def _write_labels(out_dir: Path, spec: WorldSpec, sites: Sequence[WorldSite], scenes: Sequence[WorldScene]) -> None:
    import pyogrio.raw

    rows: list[tuple[Any, dict[str, Any]]] = []
    for site in sites:
        geom = shapely.from_wkt(site.polygon_wkt)
        for k, sc in enumerate(scenes):
            rows.append((geom, {
                "site_id": site.site_id, "date": sc.date, "phase": site.phases[k], "label": site.labels[k],
                "kind": site.kind, "valid_fraction": _valid_fraction(sc.path, sc.mask_path, geom),
            }))
    doc = _geojson(rows, spec.epsg, "labels")
    (out_dir / "labels.geojson").write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    gpkg = out_dir / "labels.gpkg"
    tmp = out_dir / "labels.partial.gpkg"
    tmp.unlink(missing_ok=True)
    names = ["site_id", "date", "phase", "label", "kind", "valid_fraction"]
    data = [
        np.array([p[n] for _, p in rows], dtype=object) if n not in ("label", "valid_fraction")
        else np.array([p[n] for _, p in rows], dtype=np.int32 if n == "label" else np.float64)
        for n in names
    ]
    wkb = np.array([shapely.to_wkb(g) for g, _ in rows], dtype=object)
    # a fixed "current date" keeps the GeoPackage's timestamps (and so its bytes) reproducible
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00Z"})
    try:
        pyogrio.raw.write(str(tmp), wkb, data, names, layer="labels", driver="GPKG", geometry_type="Polygon",
                          crs=f"EPSG:{spec.epsg}", promote_to_multi=False)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})
    os.replace(tmp, gpkg)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _manifest_dict(man: WorldManifest) -> dict[str, Any]:
    def rel(p: Path | None) -> str | None:
        return None if p is None else os.path.relpath(p, man.out_dir)

    return {
        "format": WORLD_FORMAT,
        "generator": "groundbreak.world",
        "crs": man.crs,
        "spec": man.spec.to_dict(),
        "scenes": [
            {"date": s.date, "path": rel(s.path), "mask_path": rel(s.mask_path), "transform": list(s.transform),
             "width": s.width, "height": s.height, "cloud_fraction": s.cloud_fraction,
             "nodata_fraction": s.nodata_fraction}
            for s in man.scenes
        ],
        "labels_geojson": rel(man.labels_geojson),
        "labels_gpkg": rel(man.labels_gpkg),
        "aoi": rel(man.aoi),
        "sites": [
            {"site_id": s.site_id, "kind": s.kind, "polygon_wkt": s.polygon_wkt, "centroid": list(s.centroid),
             "phases": list(s.phases), "labels": list(s.labels), "start_date": s.start_date, "end_date": s.end_date}
            for s in man.sites
        ],
    }


def _manifest_from_dict(out_dir: Path, doc: dict[str, Any]) -> WorldManifest:
    def path(p: str | None) -> Path | None:
        return None if p is None else out_dir / p

    return WorldManifest(
        out_dir=out_dir,
        spec=WorldSpec.from_dict(doc["spec"]),
        scenes=tuple(
            WorldScene(s["date"], out_dir / s["path"], path(s["mask_path"]), tuple(s["transform"]), s["width"],
                       s["height"], s["cloud_fraction"], s["nodata_fraction"])
            for s in doc["scenes"]
        ),
        sites=tuple(
            WorldSite(s["site_id"], s["kind"], s["polygon_wkt"], tuple(s["centroid"]), tuple(s["phases"]),
                      tuple(s["labels"]), s["start_date"], s["end_date"])
            for s in doc["sites"]
        ),
        labels_geojson=out_dir / doc["labels_geojson"],
        labels_gpkg=out_dir / doc["labels_gpkg"],
        aoi=out_dir / doc["aoi"],
        crs=doc["crs"],
    )


def load_world(out_dir: str | os.PathLike[str]) -> WorldManifest:
    """Read a generated world's ``world.json``."""
    out = Path(out_dir)
    meta = out / "world.json"
    if not meta.is_file():
        raise MissingFileError(f"No generated world in {out} (world.json is missing)",
                               hint=f"generate one: python scripts/make_test_data.py {out} --preset demo")
    try:
        doc = json.loads(meta.read_text())
        return _manifest_from_dict(out, doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{meta} is not a valid world manifest ({exc})",
                               hint="delete the folder and generate the world again") from None


def _cached(out: Path, spec: WorldSpec) -> WorldManifest | None:
    meta = out / "world.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
        if doc.get("format") != WORLD_FORMAT or doc.get("spec") != spec.to_dict():
            return None
        man = _manifest_from_dict(out, doc)
    except (ValueError, KeyError, TypeError):
        return None
    files = [man.labels_geojson, man.labels_gpkg, man.aoi] + [s.path for s in man.scenes] + \
        [s.mask_path for s in man.scenes if s.mask_path is not None]
    return man if all(p.is_file() for p in files) else None


def _strip_rows(spec: WorldSpec) -> int:
    # ~2.5 M pixels per strip: single-band temporaries stay under glibc's 32 MB mmap threshold, so
    # they are recycled instead of page-faulted in afresh (measured: 3x less system time)
    rows = max(spec.tile, (2_600_000 // max(spec.width, 1)) // spec.tile * spec.tile)
    return int(min(rows, 1024))


def generate_world(out_dir: str | os.PathLike[str], spec: WorldSpec, *, force: bool = False) -> WorldManifest:
    """Generate (or reuse, when ``world.json`` has the same spec) a synthetic multi-date world.

    Writes ``scenes/world_{seed}_{YYYYMMDD}.tif`` (+ ``_mask.tif`` / ``_udm2.tif``), ``labels.geojson``
    (EPSG:4326), ``labels.gpkg`` (world CRS, layer ``labels``), ``aoi.geojson`` and ``world.json``.
    """
    out = Path(out_dir)
    if not force:
        cached = _cached(out, spec)
        if cached is not None:
            log.info("world %s: reusing %s", spec.seed, out)
            return cached
    try:
        (out / "scenes").mkdir(parents=True, exist_ok=True)
        (out / "world.json").unlink(missing_ok=True)  # a half-written world must never look cached
    except OSError as exc:
        raise OutputError(f"Cannot write a world into {out}: {exc}", hint="choose a writable folder") from None
    layout = _build_layout(spec)
    scenes: list[WorldScene] = []
    strip = _strip_rows(spec)
    for k, date in enumerate(spec.dates):
        scene = _prepare_date(spec, layout, k)
        stem = f"world_{spec.seed}_{date.replace('-', '')}"
        path = out / "scenes" / f"{stem}.tif"
        mask_path = None if spec.mask_kind == "none" else out / "scenes" / (
            f"{stem}_udm2.tif" if spec.mask_kind == "udm2" else f"{stem}_mask.tif")
        tags = {
            "GROUNDBREAK_WORLD_SEED": str(spec.seed),
            "REFLECTANCE_SCALE": str(_UINT16_SCALE if spec.dtype == "uint16" else _UINT8_SCALE),
        }
        cloud, nod = _write_scene(spec, scene, path, mask_path, strip, tags)
        scenes.append(
            WorldScene(date, path, mask_path, tuple(scene.transform)[:6], scene.width, scene.height, cloud, nod)
        )
        log.info(
            "world %s: wrote %s (cloud+shadow %.1f%%, nodata %.1f%%)", spec.seed, path.name, 100 * cloud, 100 * nod
        )
    days = [_dt.date.fromisoformat(d).toordinal() for d in spec.dates]
    sites = []
    for s in layout.sites:
        phases = tuple(_phase(s.phase_days, d) for d in days)
        c = s.polygon.centroid
        sites.append(WorldSite(
            s.site_id, s.kind, shapely.to_wkt(s.polygon, rounding_precision=3), (round(c.x, 3), round(c.y, 3)),
            phases, tuple(int(p in POSITIVE_PHASES) for p in phases),
            _dt.date.fromordinal(s.phase_days[0]).isoformat() if s.phase_days else None,
            _dt.date.fromordinal(s.phase_days[2]).isoformat() if s.phase_days else None,
        ))
    _write_labels(out, spec, sites, scenes)
    aoi_doc = _geojson([(layout.aoi, {"name": f"world {spec.seed}"})], spec.epsg, "aoi")
    (out / "aoi.geojson").write_text(json.dumps(aoi_doc, separators=(",", ":")) + "\n")
    man = WorldManifest(out, spec, tuple(scenes), tuple(sites), out / "labels.geojson", out / "labels.gpkg",
                        out / "aoi.geojson", f"EPSG:{spec.epsg}")
    tmp = out / "world.json.partial"
    tmp.write_text(json.dumps(_manifest_dict(man), indent=1) + "\n")
    os.replace(tmp, out / "world.json")
    return man


def large_spec(size: int = 10240, seed: int = 11, cloud_fraction: float = 0.35, dtype: str = "uint16") -> WorldSpec:
    """The single-date benchmark world behind :func:`generate_large_scene`."""
    area = (size * 2.0 / 1000) ** 2
    return WorldSpec(seed=seed, width=size, height=size, dates=("2023-07-19",), n_sites=max(2, int(area / 6)),
                     n_lookalikes=max(3, int(area / 6)), cloud_fraction=cloud_fraction, nodata_edge=True,
                     grid_shift_m=0.0, dtype=dtype)


def generate_large_scene(path: str | os.PathLike[str], *, size: int = 10240, seed: int = 11,
                         cloud_fraction: float = 0.35, dtype: str = "uint16") -> Path:
    """One large tiled scene (default 10,240² px, 20 x 20 km) plus its ``{stem}_mask.tif`` sidecar.

    Reused when the file exists and was made with the same parameters (recorded in its tags).
    """
    target = Path(path)
    spec = large_spec(size, seed, cloud_fraction, dtype)
    mask_path = target.with_name(target.stem + "_mask.tif")
    key = hashlib.sha256(json.dumps([WORLD_FORMAT, spec.to_dict()], sort_keys=True).encode()).hexdigest()[:16]
    if target.is_file() and mask_path.is_file():
        try:
            with rasterio.open(target) as src:
                if src.tags().get("GROUNDBREAK_WORLD_KEY") == key:
                    return target
        except rasterio.errors.RasterioIOError:
            pass
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create {target.parent}: {exc}", hint="choose a writable folder") from None
    layout = _build_layout(spec)
    scene = _prepare_date(spec, layout, 0)
    tags = {"GROUNDBREAK_WORLD_SEED": str(seed), "GROUNDBREAK_WORLD_KEY": key,
            "REFLECTANCE_SCALE": str(_UINT16_SCALE if dtype == "uint16" else _UINT8_SCALE)}
    cloud, nod = _write_scene(spec, scene, target, mask_path, _strip_rows(spec), tags)
    log.info("large scene %s: cloud+shadow %.1f%% of valid, nodata %.1f%%", target.name, 100 * cloud, 100 * nod)
    return target
