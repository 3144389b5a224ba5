"""``groundbreak demo``: the whole pipeline on a generated demo world, with a quick-look picture.

The demo world is synthetic (``groundbreak.world.timeline_spec``: ten dates over three seasons,
construction sites that start and end between known dates, clouds hiding some dates) and the
default model has DEMO weights; the output says so. The demo runs detection, builds the timeline
(sites with start and end dates), exports the sites as SMART site models, writes the world's truth
as SMART site models too and scores one against the other with :mod:`groundbreak.sitescore`.
The point is to see every stage work end to end without QGIS or real data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw
from rasterio.enums import Resampling

from .metrics import chip_scores, json_safe
from .model import ModelPackage, load_model_package
from .pipeline import RunOptions, RunResult, run_detection
from .plan import plan_inputs
from .reporter import CancelToken, Reporter
from .store import geometry_from_blob
from .timeline import TimelineResult, build_timeline

if TYPE_CHECKING:  # world and sitescore are imported when the demo runs
    from .sitescore import SiteReport
    from .world import WorldManifest

log = logging.getLogger(__name__)

DEMO_SEED = 7


@dataclass(frozen=True, slots=True)
class DemoResult:
    run: RunResult
    world_dir: Path
    quicklook: Path
    truth: Dict[str, float]
    timeline: TimelineResult
    #: Site-level figures against the world's truth (see site_figures()).
    sites: Dict[str, object]
    timeline_png: Path
    smart_dir: Path


def default_world_dir(seed: int = DEMO_SEED) -> Path:
    """Where the 4-date demo world of ``demo_spec(seed)`` is cached (the model card's demo-world-7)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "groundbreak" / ("demo-world-%d" % seed)


def timeline_world_dir(seed: int = DEMO_SEED) -> Path:
    """Where the 10-date timeline world of ``timeline_spec(seed)`` (what `groundbreak demo` runs on) is cached."""
    return default_world_dir(seed).with_name("demo-timeline-world-%d" % seed)


def run_demo(
    out_dir: Path,
    *,
    seed: int = DEMO_SEED,
    model: Optional[ModelPackage] = None,
    world_dir: Optional[Path] = None,
    options: Optional[RunOptions] = None,
    reporter: Optional[Reporter] = None,
    cancel: Optional[CancelToken] = None,
) -> DemoResult:
    from .sitescore import evaluate_sites
    from .smart import SmartOptions, export_smart
    from .world import generate_world, timeline_spec

    reporter = reporter or Reporter(command="demo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world_dir = Path(world_dir) if world_dir else timeline_world_dir(seed)
    model = model if model is not None else load_model_package(None)
    reporter.stage("plan", "generating (or reusing) the demo world in %s" % world_dir)
    world = generate_world(world_dir, timeline_spec(seed))
    plan = plan_inputs([str(world.aoi)], [str(p) for p in world.scene_paths], model, reporter=reporter)
    grid = plan.grid
    out = out_dir / "detections.gpkg"
    options = replace(options or RunOptions(), overwrite=True)
    result = run_detection(plan, model, out, options=options, reporter=reporter, cancel=cancel,
                           command="groundbreak demo")
    truth = _score_against_truth(out, world, grid, model)
    reporter.stage("aggregate", "building sites over %d dates" % len(world.dates))
    timeline = build_timeline(out)
    region_id = "ZZ_R%03d" % (seed % 1000)
    smart_dir = out_dir / "smart"
    export_smart(out, smart_dir, SmartOptions(region_id=region_id))
    truth_dir = write_world_truth(world, out_dir / "truth", region_id)
    report = evaluate_sites(truth_dir, smart_dir, out_dir / "sitescore")
    sites = site_figures(report, world)
    quicklook = out_dir / "quicklook.png"
    write_quicklook(quicklook, world, out, model, timeline=timeline)
    timeline_png = write_timeline_plot(out_dir / "timelines.png", timeline, report, world)
    return DemoResult(run=result, world_dir=world_dir, quicklook=quicklook, truth=truth, timeline=timeline,
                      sites=sites, timeline_png=timeline_png, smart_dir=smart_dir)


def _truth_chips(world, grid) -> Dict[str, set]:
    """chip ids per date that a labelled construction phase covers (≥ 1% of the chip)."""
    from pyproj import CRS

    from .grid import to_grid_crs

    out: Dict[str, set] = {d: set() for d in world.dates}
    for site in world.sites:
        poly = to_grid_crs(shapely.from_wkt(site.polygon_wkt), CRS.from_user_input(world.crs), grid)
        cells = grid.cells_intersecting(poly)
        for date, label in zip(world.dates, site.labels):
            if label != 1:
                continue
            for c, r in cells:
                if shapely.intersection(poly, grid.polygon(c, r)).area >= 0.01 * grid.size_m ** 2:
                    out[date].add(grid.chip_id(c, r))
    return out


def _score_against_truth(out: Path, world, grid, model: ModelPackage) -> Dict[str, float]:
    import sqlite3

    truth = _truth_chips(world, grid)
    conn = sqlite3.connect(str(out))
    try:
        rows = conn.execute("SELECT chip_id, date, score FROM chips WHERE status='inferred'").fetchall()
    finally:
        conn.close()
    y_true = [chip_id in truth.get(date, set()) for chip_id, date, _ in rows]
    y_pred = [score is not None and score >= model.threshold for _, _, score in rows]
    s = chip_scores(y_true, y_pred)  # the one P/R/F1 of train and evaluate (undefined figures are NaN)
    return {"chips_scored": len(rows), "true_positives": s.tp, "false_positives": s.fp, "false_negatives": s.fn,
            "precision": json_safe(round(s.precision, 3)), "recall": json_safe(round(s.recall, 3)),
            "f1": json_safe(round(s.f1, 3))}


def write_quicklook(path: Path, world: "WorldManifest", gpkg: Path, model: ModelPackage, *, panel: Optional[int] = None,
                    timeline: Optional[TimelineResult] = None) -> Path:
    """True-colour panels, one per date, with detections outlined (colour by score), the
    labelled construction sites in cyan and the timeline's sites (green while active, with their
    number), so a newcomer can judge the result at a glance."""
    many = len(world.scenes) > 4
    panel = panel or (400 if many else 640)
    import sqlite3

    conn = sqlite3.connect(str(gpkg))
    try:
        dets = conn.execute("SELECT date, score, geom FROM detections").fetchall()
        activity = conn.execute("SELECT date, geom FROM activity").fetchall()
    finally:
        conn.close()
    panels: List[Image.Image] = []
    for scene in world.scenes:
        with rasterio.open(scene.path) as src:
            scale = panel / max(src.width, src.height)
            h, w = int(src.height * scale), int(src.width * scale)
            rgb = src.read([1, 2, 3], out_shape=(3, h, w), resampling=Resampling.average).astype(np.float32)
            inv = ~src.transform  # world -> pixel
            sx = w / src.width
            sy = h / src.height
            crs = src.crs
        lo, hi = np.percentile(rgb[rgb > 0], (2, 98)) if (rgb > 0).any() else (0, 1)
        img8 = np.clip((rgb - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.moveaxis(img8, 0, -1), "RGB")
        draw = ImageDraw.Draw(image)

        def to_px(x: float, y: float, inv=inv, sx=sx, sy=sy) -> Tuple[float, float]:
            col, row = inv * (x, y)
            return col * sx, row * sy

        from pyproj import Transformer

        for site in world.sites:
            date_index = world.dates.index(scene.date)
            if site.labels[date_index] == 1:
                poly = shapely.from_wkt(site.polygon_wkt)
                draw.line([to_px(x, y) for x, y in poly.exterior.coords], fill=(0, 255, 255), width=2)
        t = None
        for date, score, blob in dets:
            if date != scene.date:
                continue
            geom = geometry_from_blob(blob)
            if t is None:
                t = Transformer.from_crs("EPSG:%d" % _blob_srs(blob), crs, always_xy=True)
            xs, ys = t.transform(*np.array(geom.exterior.coords).T)
            colour = (255, int(255 * (1 - min(1.0, (score - model.threshold) / max(1e-6, 1 - model.threshold)))), 0)
            draw.line([to_px(x, y) for x, y in zip(xs, ys)], fill=colour, width=2)
        for date, blob in activity:
            if date != scene.date or t is None:
                continue
            for part in geometry_from_blob(blob).geoms:
                xs, ys = t.transform(*np.array(part.exterior.coords).T)
                draw.polygon([to_px(x, y) for x, y in zip(xs, ys)], outline=(255, 0, 255))
        if timeline is not None:
            _draw_sites(draw, timeline, scene.date, crs, to_px)
        draw.rectangle([0, 0, w, 18], fill=(0, 0, 0))
        draw.text((4, 3), "%s  (%d detections)" % (scene.date, sum(1 for d in dets if d[0] == scene.date)),
                  fill=(255, 255, 255))
        panels.append(image)
    cols = min(5 if many else 2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    pw = max(p.width for p in panels)
    ph = max(p.height for p in panels)
    footer = 22
    sheet = Image.new("RGB", (cols * pw, rows * ph + footer), (0, 0, 0))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * pw, (i // cols) * ph))
    d = ImageDraw.Draw(sheet)
    d.text((4, rows * ph + 5), "Groundbreak demo: detected chips red-yellow (by score), active cells magenta, labelled "
           "construction cyan, timeline sites green (number = site) while active. Model %s%s."
           % (model.model_id, " (DEMO weights)" if model.demo else ""), fill=(255, 255, 255))
    sheet.save(path)
    return path


def _blob_srs(blob: bytes) -> int:
    import struct

    return struct.unpack_from("<i", blob, 4)[0]



def _draw_sites(draw, timeline: TimelineResult, date: str, crs, to_px) -> None:
    """The timeline's sites on one panel: green outline while active on that date, grey otherwise."""
    from pyproj import Transformer

    if date not in timeline.dates:
        return
    t = timeline.dates.index(date)
    tr = Transformer.from_crs("EPSG:%d" % timeline.epsg, crs, always_xy=True)
    for site in timeline.sites:
        active = int(timeline.site_states[site.index, t]) == 1
        colour = (0, 230, 0) if active else (150, 150, 150)
        for part in site.footprint.geoms:
            xs, ys = tr.transform(*np.array(part.exterior.coords).T)
            pts = [to_px(x, y) for x, y in zip(xs, ys)]
            draw.line(pts + pts[:1], fill=colour, width=3 if active else 1)
        if active:
            cx, cy = tr.transform(site.footprint.centroid.x, site.footprint.centroid.y)
            px, py = to_px(cx, cy)
            draw.text((px + 6, py - 6), site.site_id.rsplit("_", 1)[-1].lstrip("0"), fill=(0, 255, 0))


def write_world_truth(world: "WorldManifest", out_dir: Path, region_id: str) -> Path:
    """The world's labels as SMART truth: construction sites as ``positive_annotated`` site models
    (one observation per date with its phase, occluded where under half the site was clear),
    look-alikes as ``negative``; plus a region model (the AOI and the dates)."""
    import json

    by_site: Dict[str, List[dict]] = {}
    for feat in json.loads(Path(world.labels_geojson).read_text())["features"]:
        by_site.setdefault(feat["properties"]["site_id"], []).append(feat)
    site_dir = Path(out_dir) / "site_models"
    region_dir = Path(out_dir) / "region_models"
    site_dir.mkdir(parents=True, exist_ok=True)
    region_dir.mkdir(parents=True, exist_ok=True)
    first, last = world.dates[0], world.dates[-1]
    summaries = []
    for n, site in enumerate(world.sites, start=1):
        feats = sorted(by_site.get(site.site_id, []), key=lambda f: f["properties"]["date"])
        positive = site.kind == "construction"
        sid = "%s_%04d" % (region_id, n)
        props = {"type": "site", "region_id": region_id, "site_id": sid, "version": "1.0.0", "mgrs": "14TNT",
                 "status": "positive_annotated" if positive else "negative", "model_content": "annotation",
                 "score": 1.0, "start_date": (site.start_date if positive else None) or first,
                 "end_date": (site.end_date if positive else None) or last, "originator": "te", "validated": "True",
                 "misc_info": {"world_site_id": site.site_id, "kind": site.kind, "prep_start": site.start_date,
                               "post_start": site.end_date}}
        features: List[dict] = [{"type": "Feature", "properties": props, "geometry": feats[0]["geometry"]}]
        doc = {"type": "FeatureCollection", "features": features}
        for f in feats:
            p = f["properties"]
            features.append({"type": "Feature", "geometry": {
                "type": "MultiPolygon", "coordinates": [f["geometry"]["coordinates"]]}, "properties": {
                "type": "observation", "observation_date": p["date"], "source": None, "sensor_name": None,
                "current_phase": p["phase"] if positive else None,
                "is_occluded": "True" if p["valid_fraction"] < 0.5 else "False", "is_site_boundary": "True",
                "score": 1.0}})
        (site_dir / ("%s.geojson" % sid)).write_text(json.dumps(doc) + "\n")
        summaries.append(sid)
    aoi = json.loads(Path(world.aoi).read_text())["features"][0]["geometry"]
    region = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": aoi, "properties": {
        "type": "region", "region_id": region_id, "version": "1.0.0", "mgrs": "14TNT", "start_date": first,
        "end_date": last, "originator": "te", "model_content": "annotation", "comments": "demo world truth"}}]}
    (region_dir / ("%s.geojson" % region_id)).write_text(json.dumps(region) + "\n")
    return Path(out_dir)


def site_figures(report: "SiteReport", world: "WorldManifest") -> Dict[str, object]:
    """The demo's site-level figures: the program's precision/recall/F1, and start dates in revisits
    (0 = the first date the truth was active; +1 = one revisit late)."""
    dates = list(world.dates)
    errors = []
    for m in report.matches:
        errors.append(dates.index(m.proposal_start) - dates.index(m.truth_start)
                      if m.proposal_start in dates and m.truth_start in dates else None)
    within = sum(1 for e in errors if e is not None and abs(e) <= 1)
    positives = report.counts.get("truth_positive", 0)
    return {"truth_sites": positives, "proposed_sites": report.counts.get("proposals", 0), "found": report.tp,
            "false_sites": report.fp, "missed": list(report.missed), "precision": report.precision,
            "recall": report.recall, "f1": report.f1, "start_error_revisits": errors,
            "found_with_start_within_one_revisit": within,
            "share_found_within_one_revisit": round(within / positives, 3) if positives else None,
            "start_error_days": report.start_error_days, "end_error_days": report.end_error_days}


def write_timeline_plot(path: Path, timeline: TimelineResult, report: "SiteReport", world: "WorldManifest", *,
                        max_sites: int = 6) -> Path:
    """Score over time for a few sites (matplotlib): the site's score per date, unknown dates as
    grey bands and crosses, the enter/exit thresholds, the detected span and the truth's."""
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(timeline.sites[:max_sites])
    enter, exit_ = float(timeline.params.enter or 0.0), float(timeline.params.exit or 0.0)
    truth_of = {p: m for m in report.matches for p in m.proposal_ids}
    smart_of = {s.site_id: "%s_%04d" % ("ZZ_R%03d" % (world.spec.seed % 1000), i + 1)
                for i, s in enumerate(timeline.sites)}
    x = [dt.date.fromisoformat(d) for d in timeline.dates]
    n = max(1, len(sites))
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 2.6 * rows), squeeze=False, sharey=True)
    half = dt.timedelta(days=12)
    for ax, site in zip(axes.flat, sites):
        scores = timeline.site_scores[site.index]
        known = ~np.isnan(scores)
        for d, k in zip(x, known):
            if not k:
                ax.axvspan(d - half, d + half, color="0.85", lw=0)
        ax.plot([d for d, k in zip(x, known) if k], scores[known], "o-", color="tab:red", ms=4, label="site score")
        ax.plot([d for d, k in zip(x, known) if not k], [0.02] * int((~known).sum()), "x", color="0.4", ms=7,
                label="unknown (cloud, shadow, nodata)")
        ax.axhline(enter, color="tab:orange", ls="--", lw=1, label="enter %.2f" % enter)
        ax.axhline(exit_, color="tab:orange", ls=":", lw=1, label="exit %.2f" % exit_)
        end = dt.date.fromisoformat(site.end_date) if site.end_date else x[-1] + half
        ax.axvspan(dt.date.fromisoformat(site.start_date), end, color="tab:green", alpha=0.12, label="detected")
        m = truth_of.get(smart_of[site.site_id])
        if m is not None:
            ax.axvspan(dt.date.fromisoformat(m.truth_start), dt.date.fromisoformat(m.truth_end), ymin=0.92, ymax=1,
                       color="tab:blue", alpha=0.6, label="truth active")
        ax.set_title("%s  %s → %s" % (site.site_id, site.start_date, site.end_date or "ongoing"), fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(sites):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle("Groundbreak demo: site score over time (demo world, DEMO model)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
