"""Site-level scoring in the manner of the IARPA SMART program's broad-area-search metric.

Truth is a folder of SMART site models (optionally with ``region_models/`` beside it); proposals
are a folder of SMART site models or a run GeoPackage with ``sites``/``site_observations``.

How a truth site is read (as the program's evaluation code does):

- **Status.** ``positive_annotated``, ``positive_partial``, ``positive_pending`` (and their
  ``_static``/``transient_`` forms) are positives; ``negative``, ``positive_excluded``,
  ``negative_unbounded``, ``transient_negative``/``transient_excluded`` are *negatives*: a proposal
  that matches one is a false positive. ``ignore``, ``positive_unbounded`` and ``transient_ignore``
  are neutral: a proposal matching one counts neither way.
- **Small truth** (union of its observation polygons < 9,000 m²) is treated as ``ignore``.
- **Region.** With a region model, truth outside its polygon or its dates is set aside (ignore),
  and dates are clipped to its window.
- **Activity dates.** For phase-annotated positives (annotated/partial) activity runs from the
  first Site Preparation or Active Construction observation to the first observation that is
  all Post Construction (else the window's or site's end); a site with neither is
  ``positive_unbounded`` (ignore). For other truth, and for proposals, it is the site's
  ``start_date``..``end_date``.
- **Observations matched.** Every truth observation with a date, skipping No Activity and every
  Post Construction after the first; only polygons flagged ``is_site_boundary`` count.

Association of a truth site T and a proposal P: for each matched truth observation, P's newest
observation on or before that date; the pair matches spatially on that date when IoU ≥ τ = 0.2;
T is spatially detected when ≥ ρ = 0.5 of its observations match; temporally, the activity day
ranges must overlap with IoT ≥ 0.2 and IoP ≥ 0.1. Pairs are assigned one-to-one, best first.
Then, for truth still unmatched: a proposal covering several truth sites is retried with
intersection over the truth's area instead of IoU (*merged*); several proposals that each
overlap one truth site are combined (union per date, joint date range) and retried (*split*).
F1 = tp / (tp + ½ fp + ½ fn), counted on positive truth sites and on proposals.
Proposals are filtered like the program's scorer: status ``system_confirmed``, non-null dates, a
file name containing the region id, and (with a region model) dates clipped to its window; a
proposal wholly outside the window is dropped.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from .errors import MissingFileError, UsageError
from .grid import utm_epsg
from .smart import SmartRegion, SmartSite, find_region_model, read_site_models

log = logging.getLogger(__name__)

#: Projects a lon/lat geometry into the metric CRS the scorer measures in.
Projector = Callable[[BaseGeometry], BaseGeometry]

NEGATIVE_STATUSES = frozenset({"positive_excluded", "negative", "negative_unbounded", "transient_negative",
                               "transient_excluded"})
POSITIVE_STATUSES = frozenset({"positive", "positive_annotated", "positive_annotated_static", "positive_partial",
                               "positive_partial_static", "positive_pending", "transient_positive",
                               "transient_pending"})
IGNORE_STATUSES = frozenset({"ignore", "positive_unbounded", "transient_ignore"})
#: Positives whose observations carry phase labels: activity dates come from the phases.
PHASED_STATUSES = frozenset({"positive_annotated", "positive_partial", "positive_annotated_static",
                             "positive_partial_static"})
PROPOSAL_STATUSES = frozenset({"system_confirmed"})


@dataclass(frozen=True, slots=True)
class ScoreParams:
    tau: float = 0.2  # spatial overlap (IoU) for one observation to match
    rho: float = 0.5  # share of a truth site's observations that must match
    temporal_iot: float = 0.2
    temporal_iop: float = 0.1
    min_area_m2: float = 9000.0  # smaller truth is ignore

    def __post_init__(self) -> None:
        for name in ("tau", "rho", "temporal_iot", "temporal_iop"):
            if not 0 < getattr(self, name) <= 1:
                raise UsageError("site scoring %s must be in (0, 1], got %r" % (name, getattr(self, name)),
                                 hint="the program uses tau 0.2, rho 0.5, IoT 0.2, IoP 0.1")


@dataclass(frozen=True)
class Track:
    """A site as the scorer sees it: dates as day ordinals, polygons in a metric CRS."""

    site_id: str
    role: str  # positive / negative / ignore / proposal
    status: str
    start: int
    end: int
    dates: Tuple[int, ...]  # observation dates used (truth: the matched ones; proposal: all)
    polygons: Tuple[BaseGeometry, ...]
    union: BaseGeometry
    reason: str = ""

    @property
    def area_m2(self) -> float:
        return float(self.union.area)

    def slice_at(self, day: int) -> Optional[BaseGeometry]:
        """The newest observation polygon on or before ``day`` (the program's pairing rule)."""
        i = bisect.bisect_right(self.dates, day) - 1
        return self.polygons[i] if i >= 0 else None


@dataclass(frozen=True, slots=True)
class SiteMatch:
    truth_id: str
    proposal_ids: Tuple[str, ...]
    mode: str  # iou / merged / split
    spatial_fraction: float
    mean_overlap: float
    temporal_iot: float
    temporal_iop: float
    truth_start: str
    truth_end: str
    proposal_start: str
    proposal_end: str
    start_error_days: int  # proposal − truth
    end_error_days: int


@dataclass(frozen=True)
class SiteReport:
    params: ScoreParams
    tp: int
    fp: int
    fn: int
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    matches: Tuple[SiteMatch, ...]
    missed: Tuple[str, ...]
    false_positives: Tuple[Tuple[str, str], ...]  # (proposal id, why)
    neutral: Tuple[Tuple[str, str], ...]  # proposals matching ignore truth
    truth_set_aside: Tuple[Tuple[str, str], ...]  # (truth id, why it is ignore)
    counts: Dict[str, int] = field(default_factory=dict)
    start_error_days: Dict[str, Optional[float]] = field(default_factory=dict)
    end_error_days: Dict[str, Optional[float]] = field(default_factory=dict)
    false_alarms_per_km2: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in ("tp", "fp", "fn", "precision", "recall", "f1", "counts",
                                          "start_error_days", "end_error_days", "false_alarms_per_km2")}
        d["params"] = asdict(self.params)
        d["matches"] = [asdict(m) for m in self.matches]
        d["missed"] = list(self.missed)
        d["false_positives"] = [{"proposal_id": p, "why": w} for p, w in self.false_positives]
        d["neutral"] = [{"proposal_id": p, "why": w} for p, w in self.neutral]
        d["truth_set_aside"] = [{"truth_id": t, "why": w} for t, w in self.truth_set_aside]
        return d


# --------------------------------------------------------------------------------------------
# Reading truth and proposals into tracks
# --------------------------------------------------------------------------------------------


def _day(s: Optional[str]) -> Optional[int]:
    return None if not s else _dt.date.fromisoformat(str(s)[:10]).toordinal()


def _iso(day: int) -> str:
    return _dt.date.fromordinal(day).isoformat()


def _projector(src: CRS, dst: CRS):
    t = Transformer.from_crs(src, dst, always_xy=True)

    def apply(geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))

    return apply


def metric_crs_for(geoms_lonlat: Sequence[BaseGeometry]) -> CRS:
    """The UTM zone of the geometries' centre: areas and IoU in metres."""
    if not geoms_lonlat:
        return CRS.from_epsg(32631)
    c = shapely.union_all([g.envelope for g in geoms_lonlat]).centroid
    return CRS.from_epsg(utm_epsg(c.x, c.y))


def _boundary_parts(geom: BaseGeometry, flags: Tuple[bool, ...]) -> BaseGeometry:
    parts = list(getattr(geom, "geoms", [geom]))
    if len(flags) > 1 and len(flags) == len(parts):
        kept = [p for p, f in zip(parts, flags) if f]
        return shapely.MultiPolygon(kept) if kept else geom
    return geom


def _clean(geom: BaseGeometry) -> BaseGeometry:
    return geom if geom.is_valid else shapely.make_valid(geom)


def truth_track(site: SmartSite, project: Projector, params: ScoreParams, region: Optional[SmartRegion] = None,
                region_metric: Optional[BaseGeometry] = None) -> Track:
    """A truth site model as a track, with its role (positive/negative/ignore) and why."""
    status = site.status
    role = "positive" if status in POSITIVE_STATUSES else "negative" if status in NEGATIVE_STATUSES else "ignore"
    reason = "" if role != "ignore" else ("status %s" % status)
    lo = _day(region.start_date) if region else None
    hi = _day(region.end_date) if region else None
    obs = list(site.observations)
    if obs:  # the first/last observation without a date takes the site's dates
        if obs[0].date is None and site.start_date:
            obs[0] = replace(obs[0], date=site.start_date)
        if obs[-1].date is None and site.end_date:
            obs[-1] = replace(obs[-1], date=site.end_date)
    dated = [(d, o) for d, o in ((_day(o.date), o) for o in obs) if d is not None]
    s0, e0 = _day(site.start_date), _day(site.end_date)
    if s0 is None or e0 is None:
        role, reason = "ignore", "no start or end date"
    first_day = dated[0][0] if dated else 0
    start = s0 if s0 is not None else (lo if lo is not None else first_day)
    end = e0 if e0 is not None else (hi if hi is not None else (dated[-1][0] if dated else start))
    if lo is not None and hi is not None:
        if end < lo or start > hi:
            role, reason = "ignore", "outside the region's dates"  # kept unclipped: matches stay neutral
        else:
            start, end = max(start, lo), min(end, hi)
        if status in PHASED_STATUSES:
            dated = [(d, o) for d, o in dated if lo <= d <= hi]
    used = dated
    if status in PHASED_STATUSES:
        active = {"Site Preparation", "Active Construction"}
        first = next((d for d, o in dated if active & set(o.phases)), None)
        if first is None:
            if role != "ignore":
                role, reason = "ignore", "positive_unbounded (no Site Preparation or Active Construction)"
        else:
            start = first
            post = next((d for d, o in dated if d >= first and o.phases and set(o.phases) == {"Post Construction"}),
                        None)
            end = post if post is not None else (hi if hi is not None else end)
        used = []
        seen_post = False
        for d, o in dated:
            if o.phases and set(o.phases) == {"No Activity"}:
                continue
            if o.phases and set(o.phases) == {"Post Construction"}:
                if seen_post:
                    continue
                seen_post = True
            used.append((d, o))
    used.sort(key=lambda x: x[0])
    polys = [_clean(project(_boundary_parts(o.geometry, o.boundary))) for _, o in used]
    union = shapely.union_all(polys) if polys else _clean(project(site.geometry))
    if region_metric is not None and role != "ignore" and not union.intersects(region_metric):
        role, reason = "ignore", "outside the region"
    if role != "ignore" and union.area < params.min_area_m2:
        role, reason = "ignore", "smaller than %.0f m² (%.0f m²)" % (params.min_area_m2, union.area)
    if role != "ignore" and not used:
        role, reason = "ignore", "no dated observation"
    return Track(site.site_id, role, status, int(start), int(max(end, start)), tuple(d for d, _ in used),
                 tuple(polys), union, reason)


def proposal_track(site: SmartSite, project: Projector, region: Optional[SmartRegion] = None) -> Optional[Track]:
    """A SMART proposal as a track; None when the program's scorer would drop it (status, dates)."""
    if site.status not in PROPOSAL_STATUSES or not site.start_date or not site.end_date:
        return None
    obs = sorted((o for o in site.observations if o.date), key=lambda o: o.date or "")
    polys = tuple(_clean(project(_boundary_parts(o.geometry, o.boundary))) for o in obs)
    union = shapely.union_all(list(polys)) if polys else _clean(project(site.geometry))
    track = Track(site.site_id, "proposal", site.status, _day(site.start_date) or 0, _day(site.end_date) or 0,
                  tuple(_day(o.date) or 0 for o in obs), polys, union)
    return _clip_to_region(track, region)


def _clip_to_region(track: Track, region: Optional[SmartRegion]) -> Optional[Track]:
    """Proposal dates clipped to the region's window (as the program clips every site); None when
    the proposal lies wholly outside it."""
    lo = _day(region.start_date) if region else None
    hi = _day(region.end_date) if region else None
    if lo is None or hi is None:
        return track
    if track.end < lo or track.start > hi:
        return None
    return replace(track, start=max(track.start, lo), end=min(track.end, hi))


def gpkg_proposal_tracks(gpkg: Path, crs: CRS, *, aoi_id: Optional[str] = None,
                         region: Optional[SmartRegion] = None) -> List[Track]:
    """The sites of a run GeoPackage's timeline as proposal tracks."""
    from .timeline import gpkg_epsg, read_site_observations, read_sites

    project = _projector(CRS.from_epsg(gpkg_epsg(gpkg)), crs)
    observations = read_site_observations(gpkg, aoi_id=aoi_id)
    out = []
    for s in read_sites(gpkg, aoi_id=aoi_id):
        obs = observations.get(str(s["site_id"]), [])
        polys = tuple(_clean(project(o["geometry"])) for o in obs)
        track = _clip_to_region(Track(
            str(s["site_id"]), "proposal", "system_confirmed", _day(str(s["start_date"])) or 0,
            _day(str(s["end_date"] or s["temporal_end"])) or 0, tuple(_day(str(o["date"])) or 0 for o in obs),
            polys, _clean(project(s["geometry"]))), region)
        if track is not None:
            out.append(track)
    return out


# --------------------------------------------------------------------------------------------
# Association and scoring
# --------------------------------------------------------------------------------------------


def _spatial(t: Track, p: Track, tau: float, over_truth: bool = False) -> Tuple[float, float]:
    """(share of t's observations matched, mean overlap) against p's newest earlier slices."""
    overlaps = []
    for day, poly in zip(t.dates, t.polygons):
        s = p.slice_at(day)
        if s is None or not s.intersects(poly):
            overlaps.append(0.0)
            continue
        inter = s.intersection(poly).area
        denom = poly.area if over_truth else s.union(poly).area
        overlaps.append(inter / denom if denom > 0 else 0.0)
    if not overlaps:
        return 0.0, 0.0
    arr = np.asarray(overlaps)
    return float(np.mean(arr >= tau)), float(arr.mean())


def _temporal(t: Track, p: Track) -> Tuple[float, float]:
    inter = max(0, min(t.end, p.end) - max(t.start, p.start) + 1)
    return inter / (t.end - t.start + 1), inter / max(1, p.end - p.start + 1)


def _associate(t: Track, p: Track, params: ScoreParams, over_truth: bool = False
               ) -> Tuple[bool, float, float, float, float]:
    frac, mean = _spatial(t, p, params.tau, over_truth)
    iot, iop = _temporal(t, p)
    ok = frac >= params.rho and iot >= params.temporal_iot and iop >= params.temporal_iop
    return ok, frac, mean, iot, iop


def _combined(props: Sequence[Track]) -> Track:
    """Several proposals as one (the program's combined stack for an over-segmented site)."""
    days = sorted({d for p in props for d in p.dates})
    polys = []
    for d in days:
        parts = [s for s in (p.slice_at(d) for p in props) if s is not None]
        polys.append(shapely.union_all(parts))
    return Track("+".join(p.site_id for p in props), "proposal", "combined", min(p.start for p in props),
                 max(p.end for p in props), tuple(days), tuple(polys), shapely.union_all([p.union for p in props]))


def score_sites(truth: Sequence[Track], proposals: Sequence[Track], params: ScoreParams = ScoreParams(),
                *, region_km2: Optional[float] = None) -> SiteReport:
    """Match proposals to truth and count tp/fp/fn (see the module docstring for the rules)."""
    positives = [t for t in truth if t.role == "positive"]
    others = [t for t in truth if t.role in ("negative", "ignore")]
    tree = shapely.STRtree([p.union for p in proposals]) if proposals else None

    def candidates(t: Track) -> List[int]:
        return [] if tree is None else sorted(int(i) for i in tree.query(t.union, predicate="intersects"))

    cand = {t.site_id: candidates(t) for t in truth}
    pairs = []
    for ti, t in enumerate(positives):
        for pi in cand[t.site_id]:
            ok, frac, mean, iot, iop = _associate(t, proposals[pi], params)
            if ok:
                pairs.append((-frac, -mean, ti, pi, (frac, mean, iot, iop)))
    pairs.sort(key=lambda x: x[:4])
    matched_t: Dict[int, SiteMatch] = {}
    used_p: set = set()
    for _, _, ti, pi, stats in pairs:
        if ti in matched_t or pi in used_p:
            continue
        matched_t[ti] = _match(positives[ti], [proposals[pi]], "iou", stats)
        used_p.add(pi)
    # a proposal over several truth sites: intersection over truth
    covers: Dict[int, int] = {}
    for t in truth:
        for pi in cand[t.site_id]:
            covers[pi] = covers.get(pi, 0) + 1
    for ti, t in enumerate(positives):
        if ti in matched_t:
            continue
        for pi in cand[t.site_id]:
            if covers.get(pi, 0) < 2:
                continue
            ok, frac, mean, iot, iop = _associate(t, proposals[pi], params, over_truth=True)
            if ok:
                matched_t[ti] = _match(t, [proposals[pi]], "merged", (frac, mean, iot, iop))
                used_p.add(pi)
                break
    # several proposals over one truth site: combined
    for ti, t in enumerate(positives):
        if ti in matched_t:
            continue
        free = [pi for pi in cand[t.site_id] if pi not in used_p]
        if len(free) < 2:
            continue
        ok, frac, mean, iot, iop = _associate(t, _combined([proposals[pi] for pi in free]), params)
        if ok:
            matched_t[ti] = _match(t, [proposals[pi] for pi in free], "split", (frac, mean, iot, iop))
            used_p.update(free)
    false_pos: List[Tuple[str, str]] = []
    neutral: List[Tuple[str, str]] = []
    for pi, p in enumerate(proposals):
        if pi in used_p:
            continue
        hit = None
        for t in sorted(others, key=lambda t: t.role != "ignore"):  # ignore first: neutral wins
            if pi in cand[t.site_id] and (_associate(t, p, params)[0] or _associate(t, p, params, True)[0]):
                hit = t
                break
        if hit is not None and hit.role == "ignore":
            neutral.append((p.site_id, "matches %s (%s)" % (hit.site_id, hit.reason)))
        elif hit is not None:
            false_pos.append((p.site_id, "matches negative truth %s (%s)" % (hit.site_id, hit.status)))
        else:
            false_pos.append((p.site_id, "matches no truth site"))
    tp, fp = len(matched_t), len(false_pos)
    fn = len(positives) - tp
    matches = tuple(matched_t[i] for i in sorted(matched_t))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = tp / (tp + 0.5 * (fp + fn)) if tp + fp + fn else None
    return SiteReport(
        params, tp, fp, fn, _r(precision), _r(recall), _r(f1), matches,
        tuple(positives[i].site_id for i in range(len(positives)) if i not in matched_t), tuple(false_pos),
        tuple(neutral), tuple((t.site_id, t.reason) for t in truth if t.role == "ignore"),
        {"truth": len(truth), "truth_positive": len(positives),
         "truth_negative": sum(t.role == "negative" for t in truth),
         "truth_ignore": sum(t.role == "ignore" for t in truth), "proposals": len(proposals)},
        _errors([m.start_error_days for m in matches]), _errors([m.end_error_days for m in matches]),
        None if not region_km2 else round(fp / region_km2, 4))


def _r(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 4)


def _errors(values: Sequence[int]) -> Dict[str, Optional[float]]:
    if not values:
        return {"mean_abs": None, "median": None, "max_abs": None}
    a = np.asarray(values, float)
    return {"mean_abs": round(float(np.abs(a).mean()), 1), "median": float(np.median(a)),
            "max_abs": float(np.abs(a).max())}


def _match(t: Track, props: Sequence[Track], mode: str, stats: Tuple[float, float, float, float]) -> SiteMatch:
    start, end = min(p.start for p in props), max(p.end for p in props)
    return SiteMatch(t.site_id, tuple(p.site_id for p in props), mode, round(stats[0], 4), round(stats[1], 4),
                     round(stats[2], 4), round(stats[3], 4), _iso(t.start), _iso(t.end), _iso(start), _iso(end),
                     start - t.start, end - t.end)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def evaluate_sites(truth: Path, proposals: Path, out_dir: Optional[Path] = None, *,
                   params: ScoreParams = ScoreParams(), region_id: Optional[str] = None,
                   aoi_id: Optional[str] = None) -> SiteReport:
    """Score ``proposals`` (a SMART folder or a run GeoPackage) against a folder of SMART truth
    site models; writes ``out_dir/report.json`` when given."""
    truth, proposals = Path(truth), Path(proposals)
    region = find_region_model(truth)
    region_id = region_id or (region.region_id if region else None)
    sites = read_site_models(truth, region_id=region_id)
    if not sites:
        raise MissingFileError("no truth site models of region %s in %s" % (region_id, truth),
                               hint="the file names must contain the region id")
    crs = metric_crs_for([s.geometry for s in sites])
    project = _projector(CRS.from_epsg(4326), crs)
    region_metric = project(region.geometry) if region else None
    tracks = [truth_track(s, project, params, region, region_metric) for s in sites]
    if proposals.is_file() and proposals.suffix.lower() == ".gpkg":
        props = gpkg_proposal_tracks(proposals, crs, aoi_id=aoi_id, region=region)
        dropped = 0
    elif proposals.is_dir():
        raw = read_site_models(proposals, region_id=region_id)
        converted = [proposal_track(s, project, region) for s in raw]
        props = [p for p in converted if p is not None]
        dropped = len(converted) - len(props)
    else:
        raise MissingFileError("no proposals at %s" % proposals,
                               hint="give a SMART site-model folder or a run GeoPackage with a timeline")
    report = score_sites(tracks, props, params,
                         region_km2=None if region_metric is None else region_metric.area / 1e6)
    report.counts["proposals_dropped"] = dropped
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = report.to_dict()
        doc["truth"] = str(truth)
        doc["proposals"] = str(proposals)
        doc["region_id"] = region_id
        (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    log.info("site scores: tp %d, fp %d, fn %d, F1 %s", report.tp, report.fp, report.fn, report.f1)
    return report
