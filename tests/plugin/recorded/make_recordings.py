"""Writes the hand-made engine event streams in this folder (run: python make_recordings.py).

They follow ``protocol.py`` and the engine CLI contract; the plugin is developed and tested against
them, and the end-to-end tests check the same behaviour against the real engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from plugin import protocol  # noqa: E402

CRS = "EPSG:32614"
X0, Y0, CHIP = 500000.0, 5207000.0, 512.0
RUN_ID = "run-20260101T000000-demo"
MODEL = {"model_id": "groundbreak-demo-resnet18h-4b", "version": "0.1.0", "demo": True}
DATES = ("2014-07-20", "2015-09-26")


def feature(col: int, row: int, date: str, score: float) -> dict:
    x, y = X0 + col * CHIP, Y0 - row * CHIP
    ring = [[x, y], [x + CHIP, y], [x + CHIP, y - CHIP], [x, y - CHIP], [x, y]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "chip_id": "g14N-%d-%d" % (col, row),
            "aoi_id": "aoi-1",
            "scene_id": "scene-%s" % date.replace("-", ""),
            "date": date,
            "score": score,
            "label": "construction",
            "model_id": MODEL["model_id"],
            "run_id": RUN_ID,
        },
    }


class Writer:
    def __init__(self) -> None:
        self.seq = 0
        self.lines: list[str] = []

    def __call__(self, type_: str, **data) -> None:
        self.lines.append(protocol.encode(protocol.make_event(type_, self.seq, **data)))
        self.seq += 1

    def save(self, name: str, tail: str = "") -> None:
        (HERE / name).write_text("\n".join(self.lines) + "\n" + tail, encoding="utf-8")


def counts(**kw) -> dict:
    base = dict(planned=16, dropped_nodata=0, dropped_cloud=0, dropped_shadow=0, inferred=0, failed=0, detections=0)
    base.update(kw)
    return base


def stats(inferred: int, detections: int, seconds: float) -> dict:
    return {
        "aoi_km2": 4.19, "chips_planned": 16, "chips_dropped": {"nodata": 2, "cloud": 1, "shadow": 0},
        "chips_inferred": inferred, "chips_failed": 0, "detections": detections, "seconds": seconds,
        "cpu_seconds": seconds * 1.8, "chips_per_s": inferred / seconds, "km2_per_h": 4.19 / seconds * 3600,
    }


def cost(seconds: float) -> dict:
    run_usd = 0.10 * seconds / 3600
    return {"price_per_hour": 0.10, "run_usd": run_usd, "per_km2_usd": run_usd / 4.19}


def hello(w: Writer, command: str) -> None:
    w("hello", engine="0.1.0", command=command, model=MODEL, pid=4242)


def run_ok() -> None:
    w = Writer()
    hello(w, "run")
    w("stage", stage="plan", message="16 chips over 1 AOI x 2 scenes")
    w("progress", stage="plan", done=16, total=16, counts=counts())
    w("stage", stage="screen", message="screening masks")
    w("progress", stage="screen", done=16, total=16, counts=counts(dropped_nodata=2, dropped_cloud=1))
    w("stage", stage="infer", message="inference on 13 chips")
    w("warning", code="gsd_mismatch", message="scene GSD 5.0 m differs from the model's 2.0 m",
      hint="results are approximate")
    batches = [[(0, 0, DATES[0], 0.91), (1, 0, DATES[0], 0.62)], [(2, 1, DATES[0], 0.55)],
               [(0, 0, DATES[1], 0.97), (3, 2, DATES[1], 0.71), (1, 3, DATES[1], 0.83)]]
    done = 0
    found = 0
    for batch in batches:
        done = min(13, done + 5)
        found += len(batch)
        w("features", crs=CRS, features=[feature(*f) for f in batch])
        w("progress", stage="infer", done=done, total=13,
          counts=counts(dropped_nodata=2, dropped_cloud=1, inferred=done, detections=found))
    w("stage", stage="write", message="writing detections")
    w("result", outputs={"gpkg": "OUT.gpkg"}, stats=stats(13, found, 6.5), cost=cost(6.5))
    w("done", status="ok", exit_code=0)
    w.save("run_ok.jsonl")


def run_error() -> None:
    w = Writer()
    hello(w, "run")
    w("stage", stage="plan", message="checking inputs")
    w("error", code="band_mismatch",
      message="scene scene-20140720 has bands [red, green, blue] but the model needs [red, green, blue, nir]",
      hint="use 4-band R,G,B,NIR imagery or pass --band-order", retryable=False)
    w("done", status="failed", exit_code=1)
    w.save("run_error.jsonl")


def run_cancelled() -> None:
    w = Writer()
    hello(w, "run")
    w("stage", stage="infer", message="inference on 13 chips")
    w("features", crs=CRS, features=[feature(0, 0, DATES[0], 0.91)])
    w("progress", stage="infer", done=5, total=13, counts=counts(inferred=5, detections=1))
    w("warning", code="cancelled", message="cancel requested; stopping after this batch", hint="")
    w("result", outputs={"gpkg": "OUT.gpkg"}, stats=stats(5, 1, 2.0), cost=cost(2.0))
    w("done", status="cancelled", exit_code=0)
    w.save("run_cancelled.jsonl")


def plan() -> None:
    w = Writer()
    hello(w, "plan")
    w("stage", stage="plan", message="16 chips over 1 AOI x 2 scenes")
    w("result", outputs={}, stats={
        "aoi_km2": 4.19, "chips_planned": 16, "expected_dropped": {"nodata": 2, "cloud": 1, "shadow": 0},
        "chips_expected_inferred": 13, "expected_seconds": 6.5,
    }, cost=cost(6.5))
    w("done", status="ok", exit_code=0)
    w.save("plan.jsonl")


def plan_problems() -> None:
    """A plan refused with every problem at once, bands first (engine contract: error.problems)."""
    w = Writer()
    hello(w, "plan")
    w("stage", stage="plan", message="checking inputs")
    problems = [
        {"code": "band_mismatch", "scene_id": "rgb300_20200101", "path": "/data/rgb300_20200101.tif",
         "message": "scene rgb300_20200101 has bands [red, green, blue] but the model needs [red, green, blue, nir]",
         "hint": "use 4-band R,G,B,NIR imagery or pass --band-order"},
        {"code": "resolution_mismatch", "scene_id": "rgb300_20200101", "path": "/data/rgb300_20200101.tif",
         "message": "scene rgb300_20200101 has 300 m pixels but model expects 2.00 m imagery (used as it is only "
                    "between 1.00 and 4.00 m, half to twice its ground sample distance)",
         "hint": "use imagery near 2.00 m, or pass --allow-resample to resample it onto the 2.00 m chip grid anyway"},
        {"code": "aoi_outside", "scene_id": "b_20150926", "path": "/data/b_20150926.tif",
         "message": "scene b_20150926 does not overlap any AOI", "hint": "check the AOI or drop the scene"},
    ]
    w("error", code="scenes_unusable", retryable=False, problems=problems,
      message="3 problem(s) with 2 scene(s):\n" + "\n".join("  - " + p["message"] for p in problems),
      hint="; ".join(p["hint"] for p in problems))
    w("done", status="failed", exit_code=1)
    w.save("plan_problems.jsonl")


def run_resumed() -> None:
    """A run into an existing output of the same run: 10 chips already done, 3 new."""
    w = Writer()
    hello(w, "run")
    w("stage", stage="plan", message="16 chips over 1 AOI x 2 scenes")
    w("stage", stage="infer", message="resuming: 10 chip(s) already done, 3 to go")
    w("progress", stage="infer", done=0, total=3, counts=counts(resumed=10, dropped_nodata=2, dropped_cloud=1))
    w("features", crs=CRS, features=[feature(1, 3, DATES[1], 0.83)])
    w("progress", stage="infer", done=3, total=3,
      counts=counts(resumed=10, dropped_nodata=2, dropped_cloud=1, inferred=3, detections=1))
    s = stats(13, 6, 1.5)  # like the engine: inferred chips and detections of the whole output
    s["chips_resumed"], s["chips_processed"] = 10, 3
    w("result", outputs={"gpkg": "OUT.gpkg"}, stats=s, cost=cost(1.5))
    w("done", status="ok", exit_code=0)
    w.save("run_resumed.jsonl")


def garbage() -> None:
    w = Writer()
    hello(w, "run")
    w.lines.append("this is not json")
    w.lines.append("[1, 2, 3]")
    w.lines.append(json.dumps({"v": 1, "type": "progress", "done": 1}))  # no seq, no fields
    w.lines.append(json.dumps({"v": 1, "type": "progress", "seq": 2, "stage": "infer", "done": -1, "total": 3,
                               "counts": {}}))
    w.lines.append(json.dumps({"v": 1, "type": "heartbeat", "seq": 2, "t": 1.5}))  # unknown type: tolerated
    w.seq = 3
    w.lines.append("")
    w.lines.append("\x00\x01 binary noise \x7f")
    w("features", crs=CRS,
      features=[feature(0, 0, DATES[0], 0.9), {"type": "Feature", "geometry": None, "properties": {}}])
    w.lines.append(json.dumps({"v": 99, "type": "done", "seq": 5, "status": "ok", "exit_code": 0}))
    w.seq = 5
    # The stream is cut mid-line: no done event, and a half-written features batch.
    w.save("garbage_truncated.jsonl",
           tail='{"v":1,"type":"features","seq":5,"crs":"EPSG:32614","features":[{"type":"Fea')


if __name__ == "__main__":
    run_ok()
    run_error()
    run_cancelled()
    plan()
    plan_problems()
    run_resumed()
    garbage()
