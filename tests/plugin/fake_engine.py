#!/usr/bin/python3
"""A stand-in for the engine's interpreter: ``fake_engine.py -m groundbreak <command> ...``.

The plugin is pointed at this file as its "engine interpreter". It replays a recorded event stream
(GB_FAKE_STREAM, one line every GB_FAKE_DELAY seconds), honours cancel on stdin like the engine,
writes the output GeoPackage from the replayed features (with Debian's GDAL bindings, test-only),
and answers ``info``/``model`` with canned JSON. GB_FAKE_CRASH=1 makes it die mid-stream.
GB_FAKE_FOLLOW_AOI=1 moves the recorded detections into the AOI's bounding box and CRS (so a
screenshot shows them over the imagery).
GB_FAKE_ARGV_LOG appends the argv it was called with (one JSON list per line).
"""

import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from plugin import protocol  # noqa: E402

cancelled = threading.Event()


def watch_stdin():
    if os.environ.get("GB_FAKE_IGNORE_CANCEL"):  # a hung engine: only terminate/kill stop it
        return
    for line in sys.stdin:
        if protocol.is_cancel(line):
            cancelled.set()
            return
    cancelled.set()  # stdin closed = cancel, as the engine does


def arg_value(argv, name, default=None):
    if name in argv:
        return argv[argv.index(name) + 1]
    return default


def write_gpkg(path, crs, features, status_by_chip):
    from osgeo import ogr, osr

    ogr.UseExceptions()
    if os.path.exists(path):
        os.remove(path)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs or "EPSG:32614")
    layer = ds.CreateLayer("detections", srs, ogr.wkbPolygon)
    names = ("chip_id", "aoi_id", "scene_id", "date", "label", "model_id", "run_id", "review")
    for name in names:
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("score", ogr.OFTReal))
    for feat in features:
        out = ogr.Feature(layer.GetLayerDefn())
        props = feat["properties"]
        for name in names:
            out.SetField(name, "" if name == "review" else str(props.get(name, "")))
        out.SetField("score", float(props.get("score", 0)))
        out.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(feat["geometry"])))
        layer.CreateFeature(out)
    chips = ds.CreateLayer("chips", srs, ogr.wkbPolygon)
    for name in ("chip_id", "scene_id", "date", "status"):
        chips.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    chips.CreateField(ogr.FieldDefn("valid_fraction", ogr.OFTReal))
    for feat in features:
        out = ogr.Feature(chips.GetLayerDefn())
        props = feat["properties"]
        for name in ("chip_id", "scene_id", "date"):
            out.SetField(name, str(props.get(name, "")))
        out.SetField("status", "inferred")
        out.SetField("valid_fraction", 1.0)
        out.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(feat["geometry"])))
        chips.CreateFeature(out)
    ds = None


def follow_aoi(aoi_path):
    """(dx, dy, crs) that moves the recorded chips (origin X0, Y0 in EPSG:32614) into the AOI."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    ds = ogr.Open(aoi_path.split("|")[0])
    layer = ds.GetLayer(0)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32614)
    utm.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    src = layer.GetSpatialRef()
    xs, ys = [], []
    for feature in layer:
        geom = feature.GetGeometryRef().Clone()
        if src is not None:
            src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            geom.Transform(osr.CoordinateTransformation(src, utm))
        xmin, xmax, ymin, ymax = geom.GetEnvelope()
        xs += [xmin, xmax]
        ys += [ymin, ymax]
    return min(xs) + 256 - 500000.0, max(ys) - 256 - 5207000.0, "EPSG:32614"


def shift(event, dx, dy, crs):
    data = dict(event.data)
    data["crs"] = crs
    moved = []
    for feat in data["features"]:
        geom = feat.get("geometry")
        if isinstance(geom, dict) and geom.get("type") == "Polygon":
            geom = {"type": "Polygon", "coordinates": [[[x + dx, y + dy] for x, y in ring]
                                                        for ring in geom["coordinates"]]}
        moved.append(dict(feat, geometry=geom))
    data["features"] = moved
    return protocol.make_event("features", event.seq, **data)


def fake_scene(path, i):
    """A usable 4-band 2 m scene, unless its name says rgb300 (3 bands, 300 m, no date: three problems)."""
    name = os.path.basename(path)
    if "rgb300" in name:
        sid = os.path.splitext(name)[0]
        problems = [
            {"code": "band_mismatch", "message": "scene %s has bands [red, green, blue] but the model needs "
             "[red, green, blue, nir]" % sid, "hint": "use 4-band R,G,B,NIR imagery or pass --band-order"},
            {"code": "resolution_mismatch", "message": "scene %s has 300 m pixels but model expects 2.00 m imagery"
             % sid, "hint": "use imagery near 2.00 m, or pass --allow-resample"},
            {"code": "missing_date", "message": "no acquisition date for %s" % path,
             "hint": "put the date in the file name (YYYYMMDD)"},
        ]
        return {"id": sid, "path": path, "date": None, "bands": ["red", "green", "blue"], "resolution": [300.0, 300.0],
                "crs": {"epsg": 4326}, "problems": problems, "usable": False, "fit": None, "warnings": []}
    return {"id": "scene-%d" % i, "path": path, "date": "2014-07-2%d" % (i % 10), "date_source": "filename",
            "crs": {"epsg": 32614}, "resolution": [2.0, 2.0], "size": {"width": 1024, "height": 1024, "bands": 4},
            "dtype": "uint8", "bands": ["red", "green", "blue", "nir"], "mask_sources": [], "warnings": [],
            "problems": [], "usable": True, "fit": {"resolution_m": 2.0, "model_gsd": 2.0, "resampled": False}}


def fake_info(rest):
    """``info --json [--model DIR] SPEC...`` (GB_FAKE_OLD_INFO=1: an engine without --model)."""
    if "--model" in rest and os.environ.get("GB_FAKE_OLD_INFO"):
        print("Usage: groundbreak info [OPTIONS] SCENES...\nError: No such option: --model", file=sys.stderr)
        return 2
    specs, skip = [], False
    for arg in rest:
        if skip:
            skip = False
        elif arg in ("--model", "--band-order"):
            skip = True
        elif not arg.startswith("--"):
            specs.append(arg)
    scenes, skipped = [], []
    for spec in specs:
        if os.path.isdir(spec):
            for name in sorted(os.listdir(spec)):
                full = os.path.join(spec, name)
                if name.endswith("_mask.tif"):
                    skipped.append({"path": full, "reason": "sidecar mask of %s" % name.replace("_mask", "")})
                elif name.endswith(".tif"):
                    scenes.append(full)
        else:
            scenes.append(spec)
    print(json.dumps({"scenes": [fake_scene(p, i) for i, p in enumerate(scenes)], "skipped": skipped}))
    return 0


def main():
    argv = sys.argv[1:]
    if os.environ.get("GB_FAKE_ARGV_LOG"):
        with open(os.environ["GB_FAKE_ARGV_LOG"], "a") as fh:
            fh.write(json.dumps({"argv": argv, "env_pythonpath": os.environ.get("PYTHONPATH"),
                                 "unbuffered": os.environ.get("PYTHONUNBUFFERED")}) + "\n")
    if argv[:1] == ["-c"]:  # the plugin's engine status probe
        print(json.dumps({"groundbreak": "0.1.0", "openvino": os.environ.get("GB_FAKE_OPENVINO", "2025.1.0") or None,
                          "torch": "2.13.0", "python": "3.11.2", "executable": __file__}))
        return 0
    if argv[:2] != ["-m", "groundbreak"]:
        print("fake engine: expected -m groundbreak", file=sys.stderr)
        return 2
    command = argv[2] if len(argv) > 2 else "--help"
    rest = argv[3:]
    if command == "info":
        return fake_info(rest)
    if command == "model" and rest[:1] == ["show"]:
        rest = rest[1:]
        print(json.dumps({"model_id": "groundbreak-demo-resnet18h-4b", "version": "0.1.0",
                          "bands": ["red", "green", "blue", "nir"], "gsd": 2.0, "chip_size": 256, "demo": True,
                          "threshold": 0.5, "card_summary": "Demo weights (not validated on real construction).",
                          "path": rest[0] if rest and not rest[0].startswith("--") else "/default/model"}))
        return 0
    if command not in ("run", "plan"):
        print("fake engine: unknown command %s" % command, file=sys.stderr)
        return 2
    stream = os.environ.get("GB_FAKE_STREAM") or os.path.join(
        HERE, "recorded", "plan.jsonl" if command == "plan" else "run_ok.jsonl")
    delay = float(os.environ.get("GB_FAKE_DELAY", "0"))
    out = arg_value(rest, "--out")
    threading.Thread(target=watch_stdin, daemon=True).start()
    with open(stream, "rb") as fh:
        raw_lines = fh.read().split(b"\n")
    moved = follow_aoi(arg_value(rest, "--aoi")) if os.environ.get("GB_FAKE_FOLLOW_AOI") else None
    features, crs, seq = [], None, 0
    for i, raw in enumerate(raw_lines):
        if cancelled.is_set():
            break
        if os.environ.get("GB_FAKE_CRASH") and i == 4:
            sys.stdout.flush()
            print("Traceback (most recent call last):\nRuntimeError: simulated engine crash", file=sys.stderr)
            os._exit(134)
        try:
            event = protocol.parse_line(raw)
        except protocol.ProtocolError:
            event = None
        if event is not None and event.type == "features" and moved:
            event = shift(event, *moved)
            raw = protocol.encode(event).encode()
        if event is not None and event.type == "features":
            features += event.get("features")
            crs = event.get("crs")
        if event is not None and event.type == "result" and out:
            write_gpkg(out, crs, [f for f in features if isinstance(f.get("geometry"), dict)], {})
            data = dict(event.data)
            data["outputs"] = {"gpkg": out}
            raw = protocol.encode(protocol.make_event("result", event.seq, **data)).encode()
        if event is not None:
            seq = event.seq + 1
        sys.stdout.buffer.write(raw + (b"\n" if i < len(raw_lines) - 1 else b""))
        sys.stdout.flush()
        if delay and raw.strip():
            time.sleep(delay)
    if cancelled.is_set() and command == "run":
        if out:
            write_gpkg(out, crs, features, {})
        stats = {"aoi_km2": 4.19, "chips_planned": 16, "chips_dropped": {"nodata": 0, "cloud": 0, "shadow": 0},
                 "chips_inferred": 0, "chips_failed": 0, "detections": len(features), "seconds": 1.0,
                 "cpu_seconds": 1.0, "chips_per_s": 0.0, "km2_per_h": 0.0}
        for type_, data in (("result", {"outputs": {"gpkg": out}, "stats": stats,
                                        "cost": {"price_per_hour": 0.1, "run_usd": 0.0, "per_km2_usd": 0.0}}),
                            ("done", {"status": "cancelled", "exit_code": 0})):
            print(protocol.encode(protocol.make_event(type_, seq, **data)), flush=True)
            seq += 1
        return 0
    return int(os.environ.get("GB_FAKE_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
