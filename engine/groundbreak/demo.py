"""``groundbreak demo``: the whole pipeline on a generated demo world, with a quick-look picture.

The demo world is synthetic (``groundbreak.world``) and the default model has DEMO weights; the
output says so. The point is to see every stage work end to end without QGIS or real data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw
from rasterio.enums import Resampling

from .model import ModelPackage, load_model_package
from .pipeline import RunOptions, RunResult, run_detection
from .plan import plan_inputs
from .reporter import CancelToken, Reporter
from .store import geometry_from_blob

log = logging.getLogger(__name__)

DEMO_SEED = 7


@dataclass(frozen=True, slots=True)
class DemoResult:
    run: RunResult
    world_dir: Path
    quicklook: Path
    truth: Dict[str, float]


def default_world_dir(seed: int = DEMO_SEED) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "groundbreak" / ("demo-world-%d" % seed)


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
    from .world import demo_spec, generate_world

    reporter = reporter or Reporter(command="demo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world_dir = Path(world_dir) if world_dir else default_world_dir(seed)
    model = model if model is not None else load_model_package(None)
    reporter.stage("plan", "generating (or reusing) the demo world in %s" % world_dir)
    world = generate_world(world_dir, demo_spec(seed))
    plan = plan_inputs([str(world.aoi)], [str(p) for p in world.scene_paths], model, reporter=reporter)
    grid = plan.grid
    out = out_dir / "detections.gpkg"
    options = replace(options or RunOptions(), overwrite=True)
    result = run_detection(plan, model, out, options=options, reporter=reporter, cancel=cancel,
                           command="groundbreak demo")
    truth = _score_against_truth(out, world, grid, model)
    quicklook = out_dir / "quicklook.png"
    write_quicklook(quicklook, world, out, model)
    return DemoResult(run=result, world_dir=world_dir, quicklook=quicklook, truth=truth)


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
    tp = fp = fn = 0
    for chip_id, date, score in rows:
        positive = chip_id in truth.get(date, set())
        predicted = score is not None and score >= model.threshold
        tp += positive and predicted
        fp += (not positive) and predicted
        fn += positive and not predicted
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"chips_scored": len(rows), "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def write_quicklook(path: Path, world, gpkg: Path, model: ModelPackage, *, panel: int = 640) -> Path:
    """True-colour panels, one per date, with detections outlined (colour by score) and the
    labelled construction sites in cyan, so a newcomer can judge the result at a glance."""
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

        def to_px(x: float, y: float) -> Tuple[float, float]:
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
        draw.rectangle([0, 0, w, 18], fill=(0, 0, 0))
        draw.text((4, 3), "%s  (%d detections)" % (scene.date, sum(1 for d in dets if d[0] == scene.date)),
                  fill=(255, 255, 255))
        panels.append(image)
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    pw = max(p.width for p in panels)
    ph = max(p.height for p in panels)
    footer = 22
    sheet = Image.new("RGB", (cols * pw, rows * ph + footer), (0, 0, 0))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * pw, (i // cols) * ph))
    d = ImageDraw.Draw(sheet)
    d.text((4, rows * ph + 5), "Groundbreak demo: detected chips red-yellow (by score), active cells magenta, labelled "
           "construction cyan. Model %s%s." % (model.model_id, " (DEMO weights)" if model.demo else ""), fill=(255, 255, 255))
    sheet.save(path)
    return path


def _blob_srs(blob: bytes) -> int:
    import struct

    return struct.unpack_from("<i", blob, 4)[0]

