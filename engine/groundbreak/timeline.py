"""Activity over time: per ground chip score series → hysteresis intervals → sites with dates.

The ``aggregate`` stage. It reads a run's GeoPackage (the ``chips`` layer records every planned chip
× scene with its status and score; ``activity`` holds the model's active 32 m cells of each
detection) and writes two layers back into the same file:

- ``sites`` (MultiPolygon, grid CRS): one feature per site — adjacent chips active at overlapping
  times, merged — with ``site_id``, ``start_date``, ``end_date`` (NULL while ongoing),
  ``last_active_date``, ``temporal_end`` (``end_date`` or the last processed date, never NULL, for
  QGIS's temporal controller), ``start_year`` (for styling), peak/mean score, supporting and
  unknown dates. The footprint is the union of the model's active cells inside the site's span
  (tighter than the 512 m chips); the chip squares stand in only when no cell was recorded.
- ``site_observations`` (MultiPolygon): one row per site × processed date with ``date``, ``score``
  (NULL when unknown), ``status`` (active / inactive / unknown), ``occluded`` and the SMART
  ``phase``; the geometry is that date's active cells, or the site footprint on other dates.

and one row per build in the attribute table ``timeline_runs`` (parameters and counts).

Rules, each in one place here:

- **Unknown is not negative.** A date where a chip was dropped by the mask (cloud, shadow,
  nodata), failed, or was not covered by any scene has no score; it neither starts, continues nor
  ends activity. Only ``inferred`` chips are observations. Several scenes of one date covering a
  chip count once (the highest score).
- **Hysteresis.** Activity starts on a known date scoring ≥ ``enter``; it continues through known
  dates scoring ≥ ``exit`` (< ``enter``); it ends at the first of ``end_revisits`` consecutive known
  dates below ``exit`` (so one low date inside a site is bridged). An interval counts only with at
  least ``min_revisits`` known dates ≥ ``exit`` (one-date blips are dropped). An interval still open
  at the last date is *ongoing* (no end date).
- **Chips are ground squares.** Chip ids come from the ground-fixed grid, so dates whose pixel
  grids differ by metres (the real NAIP series) give the same chip ids: no phantom change. A chip
  a scene does not reach is unknown on that date, not inactive.
- **Sites.** Chip intervals merge when their chips touch (8-neighbourhood) and their spans
  ``[start, end]`` (``end`` = the first inactive date, or the last date while ongoing) overlap.

Re-running replaces ``sites`` and ``site_observations`` (of the same AOI, or all) in one sqlite
transaction, so a reader sees either the old or the new timeline; ``detections``, ``chips`` and
``activity`` are only read. Everything per row is numpy; Python loops run per date, per site or per
site-date with activity cells, never per chip-date row.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .errors import CorruptFileError, MissingFileError, OutputError, UsageError
from .names import OBSERVATIONS_LAYER, SITES_LAYER, SiteStatus
from .store import connect, geometry_from_blob, gpkg_blob

log = logging.getLogger(__name__)

RUNS_TABLE = "timeline_runs"

#: Threshold used when neither the parameters nor the run's model say one.
FALLBACK_THRESHOLD = 0.5
#: ``exit`` defaults to this far below ``enter``.
DEFAULT_HYSTERESIS = 0.2

SITE_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("site_id", "str"),
    ("aoi_id", "str"),
    ("start_date", "date"),
    ("end_date", "date"),
    ("last_active_date", "date"),
    ("temporal_end", "date"),
    ("start_year", "int"),
    ("ongoing", "int"),
    ("peak_score", "float"),
    ("mean_score", "float"),
    ("supporting_dates", "int"),
    ("unknown_dates", "int"),
    ("dates_in_span", "int"),
    ("chips", "int"),
    ("area_m2", "float"),
    ("model_id", "str"),
)
OBSERVATION_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("site_id", "str"),
    ("aoi_id", "str"),
    ("date", "date"),
    ("score", "float"),
    ("status", "str"),
    ("occluded", "int"),
    ("phase", "str"),
    ("chips_known", "int"),
    ("source", "str"),
)




class Phase(str, Enum):
    """IARPA SMART activity phases (site-model ``current_phase``)."""

    NO_ACTIVITY = "No Activity"
    SITE_PREPARATION = "Site Preparation"
    ACTIVE_CONSTRUCTION = "Active Construction"
    POST_CONSTRUCTION = "Post Construction"
    UNKNOWN = "Unknown"


#: Codes of the per-date state matrix (small ints so a 10k-site × 300-date matrix stays tiny).
_BEFORE, _ACTIVE, _AFTER, _UNKNOWN = 0, 1, 2, 3
_STATUS_OF_CODE = (SiteStatus.INACTIVE, SiteStatus.ACTIVE, SiteStatus.INACTIVE, SiteStatus.UNKNOWN)
_PHASE_OF_CODE = (Phase.NO_ACTIVITY, Phase.ACTIVE_CONSTRUCTION, Phase.POST_CONSTRUCTION, Phase.UNKNOWN)


@dataclass(frozen=True, slots=True)
class TimelineParams:
    """How chip series become activity intervals. ``None`` thresholds are resolved per run."""

    #: A known date scoring at least this starts activity (None: the run's model threshold).
    enter: Optional[float] = None
    #: Activity continues while known dates score at least this (None: ``enter`` − 0.2).
    exit: Optional[float] = None
    #: Known dates at or above ``exit`` an interval needs to count (2: a one-date blip never does).
    min_revisits: int = 2
    #: Consecutive known dates below ``exit`` that end an interval (2: one low date is bridged).
    end_revisits: int = 2
    #: Touching chips merge only when their active cells come this close (metres): two sites a few
    #: hundred metres apart in neighbouring chips stay two. Chips without cells merge on touching.
    merge_gap_m: float = 64.0

    def __post_init__(self) -> None:
        for name in ("enter", "exit"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise UsageError("timeline %s threshold %r is outside (0, 1]" % (name, v),
                                 hint="give a score threshold such as 0.7")
        if self.enter is not None and self.exit is not None and self.exit > self.enter:
            raise UsageError("timeline exit threshold %.3f is above the enter threshold %.3f" % (self.exit, self.enter),
                             hint="hysteresis needs exit <= enter, e.g. --enter 0.7 --exit 0.5")
        if not self.merge_gap_m >= 0:
            raise UsageError("timeline merge gap %r m is negative" % self.merge_gap_m, hint="use e.g. 64")
        if self.min_revisits < 1 or self.end_revisits < 1:
            raise UsageError("timeline min_revisits and end_revisits must be at least 1",
                             hint="use 1 to accept single dates, 2 (the default) to need a repeat")

    def resolve(self, model_threshold: Optional[float]) -> "TimelineParams":
        """Concrete thresholds: ``enter`` from the model when unset, ``exit`` below it."""
        enter = self.enter if self.enter is not None else (
            model_threshold if model_threshold is not None else FALLBACK_THRESHOLD)
        exit_ = self.exit if self.exit is not None else max(0.05, round(enter - DEFAULT_HYSTERESIS, 6))
        return replace(self, enter=float(enter), exit=float(min(exit_, enter)))

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Intervals:
    """Activity intervals of chips, as parallel arrays (indices into the date axis).

    ``end`` is the first date of the closing run of low dates, or ``n_dates`` while ongoing."""

    chip: np.ndarray  # int64 index into the chip table
    start: np.ndarray  # int32
    last: np.ndarray  # int32: last known date at/above exit
    end: np.ndarray  # int32
    support: np.ndarray  # int32: known dates at/above exit

    def __len__(self) -> int:
        return int(self.chip.size)


@dataclass(frozen=True, slots=True)
class Site:
    """One site: where and when activity was seen, and how sure."""

    site_id: str
    aoi_id: str
    start_date: str
    end_date: Optional[str]  # first date seen inactive again; None while ongoing
    last_active_date: str
    ongoing: bool
    peak_score: float
    mean_score: float
    supporting_dates: int
    unknown_dates: int
    dates_in_span: int
    chip_ids: Tuple[str, ...]
    footprint: BaseGeometry  # MultiPolygon, grid CRS
    index: int  # row of TimelineResult.site_scores / site_states

    @property
    def area_m2(self) -> float:
        return float(self.footprint.area)


@dataclass(frozen=True, slots=True)
class SiteObservation:
    date: str
    score: Optional[float]
    status: SiteStatus
    occluded: bool
    phase: Phase


@dataclass(frozen=True)
class TimelineResult:
    gpkg: Path
    aoi_id: Optional[str]
    params: TimelineParams  # resolved
    threshold_source: str
    dates: Tuple[str, ...]
    sites: Tuple[Site, ...]
    epsg: int
    stats: Dict[str, float]
    #: (n_sites, n_dates) float32, NaN where unknown.
    site_scores: np.ndarray = field(repr=False)
    #: (n_sites, n_dates) int8 state codes.
    site_states: np.ndarray = field(repr=False)

    def observations(self, site: Site) -> List[SiteObservation]:
        """The site's status on every processed date."""
        out = []
        for t, date in enumerate(self.dates):
            code = int(self.site_states[site.index, t])
            s = self.site_scores[site.index, t]
            out.append(SiteObservation(date, None if np.isnan(s) else float(s), _STATUS_OF_CODE[code],
                                       code == _UNKNOWN, _PHASE_OF_CODE[code]))
        return out


# --------------------------------------------------------------------------------------------
# The core: arrays in, arrays out (no I/O; the benchmark and the tests call these directly)
# --------------------------------------------------------------------------------------------


def collapse_rows(chip: np.ndarray, date: np.ndarray, score: np.ndarray, n_dates: int
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known observations sorted by (chip, date), one per chip-date (the highest score of the
    scenes of that date). Inputs: int chip and date indices and float scores of inferred rows."""
    key = chip.astype(np.int64) * n_dates + date.astype(np.int64)
    order = np.lexsort((-score, key))  # per key, highest score first
    key = key[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    key = key[first]
    return (key // n_dates).astype(np.int64), (key % n_dates).astype(np.int32), score[order][first].astype(np.float32)


def chip_intervals(chip: np.ndarray, date: np.ndarray, score: np.ndarray, n_dates: int,
                   params: TimelineParams) -> Intervals:
    """Hysteresis over each chip's known observations (sorted by chip, date; see collapse_rows).

    Vectorised across chips: step k handles every chip's k-th known observation at once, so the
    Python loop runs as many times as a chip has dates, not once per row."""
    if params.enter is None or params.exit is None:
        raise UsageError("chip_intervals needs resolved thresholds", hint="call params.resolve(threshold)")
    enter, exit_ = np.float32(params.enter), np.float32(params.exit)
    n = chip.size
    out: List[Tuple[np.ndarray, ...]] = []
    if n == 0:
        return _intervals_from(out)
    starts = np.flatnonzero(np.r_[True, chip[1:] != chip[:-1]])
    counts = np.diff(np.r_[starts, n])
    ids = chip[starts]
    m = ids.size
    active = np.zeros(m, bool)
    start = np.zeros(m, np.int32)
    last = np.zeros(m, np.int32)
    support = np.zeros(m, np.int32)
    lowrun = np.zeros(m, np.int32)
    first_low = np.zeros(m, np.int32)
    order = np.argsort(-counts, kind="stable")  # chips with the most dates first: prefixes shrink
    sorted_counts = counts[order]
    for k in range(int(counts.max())):
        sel = order[: int(np.searchsorted(-sorted_counts, -k, side="left"))]  # chips with > k rows
        rows = starts[sel] + k
        d, s = date[rows], score[rows]
        act = active[sel]
        begin = ~act & (s >= enter)
        keep = act & (s >= exit_)
        low = act & (s < exit_)
        b = sel[begin]
        active[b] = True
        start[b] = d[begin]
        last[b] = d[begin]
        support[b] = 1
        lowrun[b] = 0
        kp = sel[keep]
        support[kp] += 1
        last[kp] = d[keep]
        lowrun[kp] = 0
        lw = sel[low]
        first_low[lw] = np.where(lowrun[lw] == 0, d[low], first_low[lw])
        lowrun[lw] += 1
        closed = lw[lowrun[lw] >= params.end_revisits]
        if closed.size:
            ok = closed[support[closed] >= params.min_revisits]
            out.append((ids[ok], start[ok], last[ok], first_low[ok], support[ok]))
            active[closed] = False
            lowrun[closed] = 0
    still = np.flatnonzero(active & (support >= params.min_revisits))
    out.append((ids[still], start[still], last[still], np.full(still.size, n_dates, np.int32), support[still]))
    return _intervals_from(out)


def _intervals_from(parts: List[Tuple[np.ndarray, ...]]) -> Intervals:
    if not parts:
        e = np.zeros(0, np.int32)
        return Intervals(np.zeros(0, np.int64), e, e, e, e)
    cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    order = np.lexsort((cat[1], cat[0]))
    return Intervals(cat[0][order].astype(np.int64), *(c[order].astype(np.int32) for c in cat[1:]))


def group_intervals(cols: np.ndarray, rows: np.ndarray, iv: Intervals, n_dates: int,
                    footprints: Optional[np.ndarray] = None, gap_m: float = 64.0) -> np.ndarray:
    """Site label (0..n_sites-1) of every interval: intervals of touching chips (8-neighbourhood)
    whose spans [start, min(end, last date)] overlap are one site — provided their active-cell
    ``footprints`` (one geometry or None per interval) are within ``gap_m`` of each other when
    both have one. Labels are ordered by (start date, westmost-northmost chip) so site numbers
    are stable across re-runs."""
    n = len(iv)
    if n == 0:
        return np.zeros(0, np.int64)
    c, r = cols[iv.chip].astype(np.int64), rows[iv.chip].astype(np.int64)
    c0, r0 = c.min() - 1, r.min() - 1
    height = int(r.max() - r0 + 2)
    key = (c - c0) * height + (r - r0)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    span_end = np.minimum(iv.end, n_dates - 1)
    src_all: List[np.ndarray] = []
    dst_all: List[np.ndarray] = []
    for dc in (-1, 0, 1):
        for dr in (-1, 0, 1):
            if dc == 0 and dr == 0:
                continue  # one chip's intervals never overlap in time
            nk = key + dc * height + dr
            lo = np.searchsorted(skey, nk, side="left")
            hi = np.searchsorted(skey, nk, side="right")
            cnt = hi - lo
            if not cnt.any():
                continue
            src = np.repeat(np.arange(n), cnt)
            offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            dst = order[np.repeat(lo, cnt) + offs]
            overlap = (iv.start[src] <= span_end[dst]) & (iv.start[dst] <= span_end[src])
            src, dst = src[overlap], dst[overlap]
            if footprints is not None and src.size:
                a, b = footprints[src], footprints[dst]
                both = np.array([x is not None and y is not None for x, y in zip(a, b)], bool)
                near = np.ones(src.size, bool)
                if both.any():
                    near[both] = shapely.distance(np.array(list(a[both])), np.array(list(b[both]))) <= gap_m
                src, dst = src[near], dst[near]
            src_all.append(src)
            dst_all.append(dst)
    label = np.arange(n, dtype=np.int64)
    if src_all:
        u = np.concatenate(src_all)
        v = np.concatenate(dst_all)
        # Min-label propagation with pointer jumping: O(log) rounds for compact sites.
        while True:
            before = label.copy()
            np.minimum.at(label, u, label[v])
            np.minimum.at(label, v, label[u])
            label = label[label]
            if np.array_equal(label, before):
                break
    roots, inverse = np.unique(label, return_inverse=True)
    first_start = np.full(roots.size, n_dates, np.int64)
    np.minimum.at(first_start, inverse, iv.start.astype(np.int64))
    first_key = np.full(roots.size, np.iinfo(np.int64).max, np.int64)
    # west to east, then north to south: col ascending, row descending
    np.minimum.at(first_key, inverse, (c - c0) * height + (height - (r - r0)))
    rank = np.empty(roots.size, np.int64)
    rank[np.lexsort((first_key, first_start))] = np.arange(roots.size)
    return rank[inverse]


@dataclass(frozen=True, slots=True)
class SiteArrays:
    """Per-site summaries as arrays (what the benchmark measures and the writer consumes)."""

    start: np.ndarray
    last: np.ndarray
    end: np.ndarray  # n_dates while ongoing
    scores: np.ndarray  # (n_sites, n_dates) float32, NaN unknown
    states: np.ndarray  # (n_sites, n_dates) int8
    known_chips: np.ndarray  # (n_sites, n_dates) int16: member chips with a score
    member_site: np.ndarray  # membership pairs (site, chip), sorted by site
    member_chip: np.ndarray
    peak: np.ndarray
    mean: np.ndarray
    supporting: np.ndarray
    unknown: np.ndarray
    in_span: np.ndarray


def site_arrays(chip: np.ndarray, date: np.ndarray, score: np.ndarray, iv: Intervals, label: np.ndarray,
                n_dates: int, params: TimelineParams) -> SiteArrays:
    """Site spans, per-date scores and states from the intervals and their site labels."""
    n_sites = int(label.max()) + 1 if label.size else 0
    start = np.full(n_sites, n_dates, np.int32)
    np.minimum.at(start, label, iv.start)
    last = np.zeros(n_sites, np.int32)
    np.maximum.at(last, label, iv.last)
    end = np.zeros(n_sites, np.int32)
    np.maximum.at(end, label, iv.end)  # an ongoing member (end = n_dates) keeps the site ongoing
    stride = int(chip.max()) + 1 if chip.size else 1
    pairs = np.unique(label.astype(np.int64) * stride + iv.chip)
    member_site, member_chip = pairs // stride, pairs % stride
    # rows of each member chip, expanded over its sites
    row_start = np.searchsorted(chip, member_chip, side="left")
    row_end = np.searchsorted(chip, member_chip, side="right")
    cnt = row_end - row_start
    rows = np.repeat(row_start, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    sites_of_rows = np.repeat(member_site, cnt)
    scores = np.full((n_sites, n_dates), np.nan, np.float32)
    np.fmax.at(scores, (sites_of_rows, date[rows]), score[rows])
    known_chips = np.zeros((n_sites, n_dates), np.int16)
    np.add.at(known_chips, (sites_of_rows, date[rows]), 1)
    t = np.arange(n_dates)[None, :]
    # the span runs to the last date before the first inactive one, or to the last date
    span_end = np.where(end >= n_dates, n_dates - 1, end - 1)[:, None]
    in_span = (t >= start[:, None]) & (t <= span_end)
    unknown = np.isnan(scores)
    states = np.where(t < start[:, None], _BEFORE, np.where(t >= end[:, None], _AFTER, _ACTIVE)).astype(np.int8)
    states[unknown] = _UNKNOWN
    active_span = (t >= start[:, None]) & (t <= last[:, None]) & ~unknown
    supporting = (active_span & (np.nan_to_num(scores, nan=-1.0) >= np.float32(params.exit))).sum(1)
    with np.errstate(invalid="ignore"):
        total = np.where(active_span, scores, 0).sum(1)
        mean = total / np.maximum(active_span.sum(1), 1)
    peak = np.where(in_span & ~unknown, scores, -np.inf).max(1) if n_sites and n_dates else np.zeros(n_sites)
    return SiteArrays(start, last, end, scores, states, known_chips, member_site, member_chip,
                      peak.astype(np.float32), mean.astype(np.float32), supporting.astype(np.int32),
                      (in_span & unknown).sum(1).astype(np.int32), in_span.sum(1).astype(np.int32))


def parse_chip_ids(chip_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, float]:
    """(cols, rows, chip size in metres) of grid chip ids ``EPSG_SIZE_COL_ROW`` (grid.ChipGrid.chip_id)."""
    if not len(chip_ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0
    try:
        parts = np.array([c.rsplit("_", 3) for c in chip_ids])
        size = float(parts[0, 1])
        return parts[:, 2].astype(np.int64), parts[:, 3].astype(np.int64), size
    except (ValueError, IndexError):
        raise CorruptFileError("chip ids such as %r are not grid ids EPSG_SIZE_COL_ROW" % chip_ids[0],
                               hint="build timelines from a Groundbreak run GeoPackage") from None


# --------------------------------------------------------------------------------------------
# The GeoPackage side
# --------------------------------------------------------------------------------------------


def _open_run(gpkg: Path) -> Tuple[sqlite3.Connection, int]:
    gpkg = Path(gpkg)
    if not gpkg.is_file():
        raise MissingFileError("no run GeoPackage at %s" % gpkg,
                               hint="give the --out file of a `groundbreak run` (or demo)")
    try:
        conn = connect(gpkg)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        row = conn.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name='chips'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CorruptFileError("%s is not a readable GeoPackage: %s" % (gpkg, exc),
                               hint="give the --out file of a `groundbreak run`") from None
    missing = {"chips", "runs", "detections"} - tables
    if missing or row is None:
        conn.close()
        raise CorruptFileError("%s is not a Groundbreak run output (no %s)" % (gpkg, ", ".join(sorted(missing)) or
                                                                             "chips geometry"),
                               hint="give the --out file of a `groundbreak run`")
    return conn, int(row[0])


def _aoi_filter(aoi_id: Optional[str], column: str = "aoi_id") -> Tuple[str, tuple]:
    if aoi_id is None:
        return "", ()
    # aoi_id holds every AOI of a deduplicated chip, comma-joined (plan.ChipRef.aoi_label)
    return " AND instr(',' || %s || ',', ?) > 0" % column, (",%s," % aoi_id,)


@dataclass(frozen=True, slots=True)
class _Series:
    chip_ids: Tuple[str, ...]
    dates: Tuple[str, ...]
    chip: np.ndarray
    date: np.ndarray
    score: np.ndarray
    rows_total: int
    rows_known: int


def _read_series(conn: sqlite3.Connection, aoi_id: Optional[str], chunk: int = 1 << 18) -> _Series:
    """Every inferred (chip, date, score) as integer-coded arrays; SQLite maps the strings."""
    where, args = _aoi_filter(aoi_id)
    dates = tuple(r[0] for r in conn.execute("SELECT DISTINCT date FROM chips WHERE 1=1%s ORDER BY date" % where,
                                             args))
    total = conn.execute("SELECT COUNT(*) FROM chips WHERE 1=1%s" % where, args).fetchone()[0]
    conn.execute("DROP TABLE IF EXISTS temp.tl_chip")
    conn.execute("DROP TABLE IF EXISTS temp.tl_date")
    conn.execute("CREATE TEMP TABLE tl_chip (idx INTEGER PRIMARY KEY, chip_id TEXT UNIQUE)")
    conn.execute("CREATE TEMP TABLE tl_date (idx INTEGER PRIMARY KEY, date TEXT UNIQUE)")
    conn.executemany("INSERT INTO tl_date (idx, date) VALUES (?, ?)", list(enumerate(dates)))
    conn.execute("INSERT INTO tl_chip (chip_id) SELECT DISTINCT chip_id FROM chips WHERE status='inferred'"
                 " AND score IS NOT NULL%s ORDER BY chip_id" % where, args)
    chip_ids = tuple(r[0] for r in conn.execute("SELECT chip_id FROM tl_chip ORDER BY idx"))
    cur = conn.execute(
        "SELECT k.idx - 1, d.idx, c.score FROM chips c JOIN tl_chip k ON k.chip_id = c.chip_id "
        "JOIN tl_date d ON d.date = c.date WHERE c.status='inferred' AND c.score IS NOT NULL%s"
        % _aoi_filter(aoi_id, "c.aoi_id")[0], args)
    dt = np.dtype([("chip", np.int64), ("date", np.int32), ("score", np.float32)])
    parts = []
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            break
        parts.append(np.array(rows, dtype=dt))
    arr = np.concatenate(parts) if parts else np.zeros(0, dt)
    conn.execute("DROP TABLE temp.tl_chip")
    conn.execute("DROP TABLE temp.tl_date")
    return _Series(chip_ids, dates, arr["chip"], arr["date"], arr["score"], int(total), int(arr.size))


def _model_threshold(conn: sqlite3.Connection) -> Tuple[Optional[float], str]:
    """The detection threshold of the run's model: recorded in the run, or the default package's
    when the run used it (same weights hash)."""
    row = conn.execute("SELECT inputs, model_sha256 FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None, "fallback (no run recorded)"
    try:
        model = json.loads(row[0] or "{}").get("model", {})
    except ValueError:
        model = {}
    if isinstance(model.get("threshold"), (int, float)):
        return float(model["threshold"]), "run's model"
    try:
        from .model import load_model_package

        default = load_model_package(None)
    except Exception as exc:  # noqa: BLE001 - any failure just means "not known"
        log.debug("default model package unavailable: %s", exc)
        return None, "fallback (model threshold not recorded)"
    if row[1] and row[1] == default.sha256:
        return float(default.threshold), "model %s" % default.model_id
    return None, "fallback (model threshold not recorded)"


def build_timeline(gpkg: Path, params: TimelineParams = TimelineParams(), *, aoi_id: Optional[str] = None,
                   write: bool = True) -> TimelineResult:
    """Build sites from a run GeoPackage and (unless ``write=False``) replace its ``sites`` and
    ``site_observations`` (those of ``aoi_id`` only, when given) atomically."""
    t0 = time.perf_counter()
    gpkg = Path(gpkg)
    conn, epsg = _open_run(gpkg)
    try:
        threshold, source = (None, "parameters") if params.enter is not None else _model_threshold(conn)
        resolved = params.resolve(threshold)
        series = _read_series(conn, aoi_id)
        t_read = time.perf_counter() - t0
        n_dates = len(series.dates)
        chip, date, score = collapse_rows(series.chip, series.date, series.score, max(n_dates, 1))
        iv = chip_intervals(chip, date, score, n_dates, resolved)
        cols, rows, size_m = parse_chip_ids(series.chip_ids)
        cells = _read_activity(conn, aoi_id, series.chip_ids, series.dates, set(iv.chip.tolist()))
        label = group_intervals(cols, rows, iv, n_dates, interval_footprints(iv, cells), resolved.merge_gap_m)
        arrays = site_arrays(chip, date, score, iv, label, n_dates, resolved)
        model_id = _run_model_id(conn)
        sites, obs_geoms = _make_sites(arrays, series, cols, rows, size_m, cells, aoi_id)
        stats: Dict[str, float] = {
            "rows": series.rows_total, "rows_inferred": series.rows_known, "chip_dates": int(chip.size),
            "chips": len(series.chip_ids), "dates": n_dates, "intervals": len(iv), "sites": len(sites),
            "ongoing": sum(s.ongoing for s in sites), "read_s": round(t_read, 3),
        }
        result = TimelineResult(gpkg, aoi_id, resolved, source, series.dates, tuple(sites), epsg, stats,
                                arrays.scores, arrays.states)
        if write:
            _write(conn, result, arrays, obs_geoms, model_id)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        log.info("timeline %s: %d site(s) from %d chip-date rows over %d date(s) in %.1f s", gpkg.name, len(sites),
                 series.rows_total, n_dates, stats["seconds"])
        return result
    finally:
        conn.close()


def _run_model_id(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT model_id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row and row[0] else ""


def _read_activity(conn: sqlite3.Connection, aoi_id: Optional[str], chip_ids: Sequence[str], dates: Sequence[str],
                   members: set) -> Dict[Tuple[int, int], BaseGeometry]:
    """(chip index, date index) → active cells, for the chips that belong to a site."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "activity" not in tables or not members:
        return {}
    index = {chip_ids[i]: i for i in members}
    date_index = {d: i for i, d in enumerate(dates)}
    where, args = _aoi_filter(aoi_id)
    out: Dict[Tuple[int, int], List[BaseGeometry]] = {}
    for chip_id, date, blob in conn.execute("SELECT chip_id, date, geom FROM activity WHERE geom IS NOT NULL%s"
                                            % where, args):
        i = index.get(chip_id)
        if i is None or date not in date_index:
            continue
        out.setdefault((i, date_index[date]), []).append(geometry_from_blob(blob))
    return {k: (v[0] if len(v) == 1 else shapely.union_all(v)) for k, v in out.items()}


def interval_footprints(iv: Intervals, cells: Dict[Tuple[int, int], BaseGeometry]) -> np.ndarray:
    """Per interval, the union of its chip's active cells over its active dates (None without)."""
    out = np.empty(len(iv), dtype=object)
    for i in range(len(iv)):
        c = int(iv.chip[i])
        parts = [cells[(c, t)] for t in range(int(iv.start[i]), int(iv.last[i]) + 1) if (c, t) in cells]
        out[i] = None if not parts else (parts[0] if len(parts) == 1 else shapely.union_all(parts))
    return out


def _multi(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type == "Polygon":
        return shapely.MultiPolygon([geom])
    if geom.geom_type == "GeometryCollection":
        return shapely.MultiPolygon([g for g in geom.geoms if g.geom_type == "Polygon"])
    return geom


def _make_sites(a: SiteArrays, series: _Series, cols: np.ndarray, rows: np.ndarray, size_m: float,
                cells: Dict[Tuple[int, int], BaseGeometry], aoi_id: Optional[str]
                ) -> Tuple[List[Site], Dict[Tuple[int, int], BaseGeometry]]:
    """Site values with footprints; and the per-(site, date) active-cell geometry where there is one."""
    dates = series.dates
    n_dates = len(dates)
    bounds = np.searchsorted(a.member_site, np.arange(a.start.size + 1))
    sites: List[Site] = []
    obs_geoms: Dict[Tuple[int, int], BaseGeometry] = {}
    prefix = "site" if aoi_id is None else "%s_site" % aoi_id
    for s in range(a.start.size):
        members = a.member_chip[bounds[s]:bounds[s + 1]]
        span = range(int(a.start[s]), int(a.last[s]) + 1)
        per_date = {}
        for t in span:
            parts = [cells[(int(c), t)] for c in members if (int(c), t) in cells]
            if parts:
                per_date[t] = _multi(parts[0] if len(parts) == 1 else shapely.union_all(parts))
        if per_date:
            footprint = _multi(shapely.union_all(list(per_date.values())))
        else:
            footprint = _multi(shapely.union_all(shapely.box(cols[members] * size_m, rows[members] * size_m,
                                                             (cols[members] + 1) * size_m,
                                                             (rows[members] + 1) * size_m)))
        for t, g in per_date.items():
            obs_geoms[(s, t)] = g
        ongoing = bool(a.end[s] >= n_dates)
        chip_ids = tuple(sorted(series.chip_ids[int(c)] for c in members))
        aoi = aoi_id if aoi_id is not None else ""
        sites.append(Site(
            site_id="%s_%04d" % (prefix, s + 1), aoi_id=aoi, start_date=dates[int(a.start[s])],
            end_date=None if ongoing else dates[int(a.end[s])], last_active_date=dates[int(a.last[s])],
            ongoing=ongoing, peak_score=round(float(a.peak[s]), 5), mean_score=round(float(a.mean[s]), 5),
            supporting_dates=int(a.supporting[s]), unknown_dates=int(a.unknown[s]), dates_in_span=int(a.in_span[s]),
            chip_ids=chip_ids, footprint=footprint, index=s,
        ))
    return sites, obs_geoms


def _ensure_layers(conn: sqlite3.Connection, gpkg: Path, epsg: int) -> None:
    """Create ``sites``/``site_observations`` with GDAL (so QGIS reads them) and ``timeline_runs``."""
    from pyogrio.raw import write as ogr_write

    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    kinds: Dict[str, object] = {"str": object, "float": np.float64, "int": np.int32, "date": "datetime64[D]"}
    for layer, fields in ((SITES_LAYER, SITE_FIELDS), (OBSERVATIONS_LAYER, OBSERVATION_FIELDS)):
        if layer in tables:
            cols = [r[1] for r in conn.execute('PRAGMA table_info("%s")' % layer)]
            if cols[2:] == [n for n, _ in fields]:
                continue
            raise OutputError("%s has a %s layer with other fields (%s)" % (gpkg, layer, ", ".join(cols[2:])),
                              hint="it was not written by this Groundbreak version: delete the layer "
                                   "(ogrinfo %s -sql 'DROP TABLE %s') and run again" % (gpkg, layer))
        try:
            ogr_write(str(gpkg), np.array([], dtype=object),
                      [np.zeros(0, dtype=kinds[t]) for _, t in fields], fields=[n for n, _ in fields],
                      layer=layer, driver="GPKG", geometry_type="MultiPolygon", crs="EPSG:%d" % epsg, append=True)
        except Exception as exc:  # GDAL's own error types (not OSError) for unwritable files
            raise OutputError("cannot add the %s layer to %s: %s" % (layer, gpkg, exc),
                              hint="check the file is writable and not open for editing elsewhere") from None
    if RUNS_TABLE not in tables:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY AUTOINCREMENT, built TEXT NOT NULL, aoi_id TEXT, "
                     "params TEXT NOT NULL, threshold_source TEXT, stats TEXT, engine_version TEXT)" % RUNS_TABLE)
        conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
                     "VALUES (?, 'attributes', ?, 'Groundbreak timeline builds and their parameters')",
                     (RUNS_TABLE, RUNS_TABLE))
        conn.execute("COMMIT")


def _write(conn: sqlite3.Connection, result: TimelineResult, a: SiteArrays,
           obs_geoms: Dict[Tuple[int, int], BaseGeometry], model_id: str) -> None:
    from . import __version__

    _ensure_layers(conn, result.gpkg, result.epsg)
    srs = result.epsg
    dates = result.dates
    last_date = dates[-1] if dates else None
    sources = _sources_by_date(conn, result.aoi_id)
    site_rows = []
    obs_rows = []
    for site in result.sites:
        fp_blob = gpkg_blob(shapely.to_wkb(site.footprint), srs)
        site_rows.append((
            fp_blob, site.site_id, site.aoi_id, site.start_date, site.end_date, site.last_active_date,
            site.end_date or last_date, int(site.start_date[:4]), int(site.ongoing), site.peak_score,
            site.mean_score, site.supporting_dates, site.unknown_dates, site.dates_in_span, len(site.chip_ids),
            round(site.area_m2, 1), model_id,
        ))
        s = site.index
        for t, date in enumerate(dates):
            code = int(a.states[s, t])
            score = a.scores[s, t]
            geom = obs_geoms.get((s, t))
            obs_rows.append((
                fp_blob if geom is None else gpkg_blob(shapely.to_wkb(geom), srs), site.site_id, site.aoi_id,
                date, None if np.isnan(score) else round(float(score), 5), _STATUS_OF_CODE[code].value,
                int(code == _UNKNOWN), _PHASE_OF_CODE[code].value, int(a.known_chips[s, t]), sources.get(date, ""),
            ))
    where = "" if result.aoi_id is None else " WHERE aoi_id = ?"
    args: tuple = () if result.aoi_id is None else (result.aoi_id,)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute('DELETE FROM "%s"%s' % (SITES_LAYER, where), args)
        conn.execute('DELETE FROM "%s"%s' % (OBSERVATIONS_LAYER, where), args)
        conn.executemany('INSERT INTO "%s" (geom, %s) VALUES (?%s)' % (
            SITES_LAYER, ", ".join(n for n, _ in SITE_FIELDS), ",?" * len(SITE_FIELDS)), site_rows)
        conn.executemany('INSERT INTO "%s" (geom, %s) VALUES (?%s)' % (
            OBSERVATIONS_LAYER, ", ".join(n for n, _ in OBSERVATION_FIELDS), ",?" * len(OBSERVATION_FIELDS)), obs_rows)
        conn.execute("INSERT INTO %s (built, aoi_id, params, threshold_source, stats, engine_version) "
                     "VALUES (?, ?, ?, ?, ?, ?)" % RUNS_TABLE,
                     (_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), result.aoi_id,
                      json.dumps(result.params.to_dict(), sort_keys=True), result.threshold_source,
                      json.dumps(result.stats, sort_keys=True), __version__))
        for table in (SITES_LAYER, OBSERVATIONS_LAYER):
            row = conn.execute('SELECT MIN(ST_MinX(geom)), MIN(ST_MinY(geom)), MAX(ST_MaxX(geom)), '
                               'MAX(ST_MaxY(geom)), COUNT(*) FROM "%s"' % table).fetchone()
            conn.execute("UPDATE gpkg_contents SET min_x=?, min_y=?, max_x=?, max_y=?, "
                         "last_change=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE table_name=?", row[:4] + (table,))
            conn.execute("UPDATE gpkg_ogr_contents SET feature_count=? WHERE table_name=?", (row[4], table))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise OutputError("could not write the timeline to %s: %s" % (result.gpkg, exc),
                          hint="check free disk space and that no other program holds the file open for writing; "
                               "the previous timeline is unchanged", retryable=True) from None


def _sources_by_date(conn: sqlite3.Connection, aoi_id: Optional[str]) -> Dict[str, str]:
    """date → the scene ids processed on it (a site observation's ``source``)."""
    row = conn.execute("SELECT inputs FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    out: Dict[str, List[str]] = {}
    try:
        for s in json.loads(row[0] or "{}").get("scenes", []) if row else []:
            out.setdefault(s["date"], []).append(s["scene_id"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {d: ",".join(sorted(v)) for d, v in out.items()}


def read_sites(gpkg: Path, *, aoi_id: Optional[str] = None) -> List[Dict[str, object]]:
    """The ``sites`` rows of a GeoPackage as dicts (geometry as shapely, grid CRS)."""
    conn, _ = _open_run(gpkg)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if SITES_LAYER not in tables:
            raise MissingFileError("%s has no sites layer" % gpkg,
                                   hint="build it first: groundbreak timeline --in %s" % gpkg)
        where, args = _aoi_filter(aoi_id)
        names = [n for n, _ in SITE_FIELDS]
        out = []
        for row in conn.execute('SELECT geom, %s FROM "%s" WHERE 1=1%s ORDER BY site_id'
                                % (", ".join(names), SITES_LAYER, where), args):
            d: Dict[str, object] = dict(zip(names, row[1:]))
            d["geometry"] = geometry_from_blob(row[0])
            out.append(d)
        return out
    finally:
        conn.close()


def read_site_observations(gpkg: Path, *, aoi_id: Optional[str] = None) -> Dict[str, List[Dict[str, object]]]:
    """site_id → its ``site_observations`` rows (date order), geometry as shapely (grid CRS)."""
    conn, _ = _open_run(gpkg)
    try:
        where, args = _aoi_filter(aoi_id)
        names = [n for n, _ in OBSERVATION_FIELDS]
        out: Dict[str, List[Dict[str, object]]] = {}
        for row in conn.execute('SELECT geom, %s FROM "%s" WHERE 1=1%s ORDER BY site_id, date'
                                % (", ".join(names), OBSERVATIONS_LAYER, where), args):
            d: Dict[str, object] = dict(zip(names, row[1:]))
            d["geometry"] = geometry_from_blob(row[0])
            out.setdefault(str(d["site_id"]), []).append(d)
        return out
    finally:
        conn.close()


def gpkg_epsg(gpkg: Path) -> int:
    """The grid EPSG of a run GeoPackage."""
    conn, epsg = _open_run(gpkg)
    conn.close()
    return epsg
