"""One-line descriptions of engine answers (scene info, model card, plan) for the dock and Processing.

Standard library only, so they are unit-tested without QGIS.
"""

from __future__ import annotations


def describe_scene(scene: dict) -> str:
    """Date, bands, resolution and CRS of one ``info`` scene (tolerates the flat contract fields
    ``res``/``epsg``/band-name lists and the engine's nested ``resolution``/``crs``/band dicts)."""
    res = scene.get("res") or scene.get("resolution") or [0, 0]
    crs = scene.get("crs")
    epsg = scene.get("epsg") or (crs.get("epsg") if isinstance(crs, dict) else crs)
    names = []
    for band in scene.get("bands") or []:
        names.append(str(band.get("name") or band.get("description") or band.get("index")) if isinstance(band, dict)
                     else str(band))
    count = scene.get("count") or (scene.get("size") or {}).get("bands")
    try:
        gsd = float(res[0] or 0)
    except (TypeError, ValueError, IndexError):
        gsd = 0.0
    return "%s · %s · %.1f m · EPSG:%s" % (
        scene.get("date") or "no date", ",".join(names) or "%s bands" % count, gsd, epsg)


def describe_model(model: dict) -> str:
    text = "%s %s · bands %s · %.1f m GSD · %d px chips" % (
        model.get("model_id"), model.get("version"), ",".join(model.get("bands") or []), float(model.get("gsd") or 0),
        int(model.get("chip_size") or 0))
    if model.get("demo"):
        text += " · DEMO weights (not validated on real construction)"
    if model.get("card_summary"):
        text += "\n" + str(model["card_summary"])
    return text


def describe_model_short(model: dict) -> str:
    """The model card in one short line (the dock's; the full card goes in its tooltip)."""
    from .scenes import short_bands

    text = "%s %s · %s · %.1f m · %d px" % (
        model.get("model_id"), model.get("version"), short_bands(model.get("bands") or []),
        float(model.get("gsd") or 0), int(model.get("chip_size") or 0))
    if model.get("demo"):
        text += " · DEMO"
    return text


def describe_plan(result: dict) -> str:
    stats = result.get("stats") or {}
    cost = result.get("cost") or {}
    dropped = stats.get("expected_dropped") or {}
    return ("%d chips over %.2f km²; expected drops: %d nodata, %d cloud, %d shadow; %d to infer; "
            "about %s; cost %s at $%.2f/h (%s per km²)") % (
        int(stats.get("chips_planned", 0)), float(stats.get("aoi_km2", 0)), int(dropped.get("nodata", 0)),
        int(dropped.get("cloud", 0)), int(dropped.get("shadow", 0)), int(stats.get("chips_expected_inferred", 0)),
        _duration(float(stats.get("expected_seconds", 0))), usd(cost.get("run_usd")),
        float(cost.get("price_per_hour", 0)), usd(cost.get("per_km2_usd")))


def describe_run(status: str, result, streamed: int, in_output=None, counts=None) -> str:
    """The end of a run in one line; a resumed run says so, and its numbers agree with the counts.

    In a resumed run the result's ``chips_inferred`` and ``detections`` cover the whole output (this
    run and the earlier ones); the chips this run did are ``chips_processed`` and the ``progress``
    counts (``counts``), which count this run only.
    """
    result = result or {}
    stats = result.get("stats") or {}
    cost = result.get("cost") or {}
    counts = counts or {}
    resumed = int(stats.get("chips_resumed") or counts.get("resumed") or 0)
    inferred = counts.get("inferred", stats.get("chips_inferred"))
    parts = []
    if resumed:
        new = stats.get("chips_processed", inferred)
        parts.append("resumed: %d chips already done, %s new" % (resumed, new if new is not None else "?"))
    if stats:
        parts.append("%s chips inferred in %.1f s" % (inferred, float(stats.get("seconds") or 0)))
    detections = stats.get("detections", streamed)
    if in_output is not None and resumed:
        parts.append("%s detections in the output (%s found now)" % (in_output, streamed))
    else:
        parts.append("%s detections" % detections)
    if cost.get("run_usd") is not None:
        parts.append("cost %s" % usd(cost["run_usd"]))
    return status + ": " + ", ".join(parts)


def usd(value) -> str:
    """Dollars with enough digits to be non-zero: small runs cost fractions of a cent."""
    if value is None:
        return "n/a"
    value = float(value)
    if value == 0 or value >= 0.01:
        return "$%.2f" % value
    return "$%.2g" % value


def _duration(seconds: float) -> str:
    if seconds < 90:
        return "%.0f s" % seconds
    if seconds < 5400:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)
