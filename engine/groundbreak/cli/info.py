"""``groundbreak info``."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from ..errors import GroundbreakError
from ..model import ModelPackage, load_model_package
from ..scene import describe_scene, survey_scenes
from ..suitability import fit_scene
from . import options


def survey(specs: Sequence[str], model: ModelPackage, *, band_order: Optional[Tuple[str, ...]],
           allow_resample: bool) -> Dict[str, Any]:
    """Every scene of every spec described and checked against the model. A scene without a date is
    still described (that is what ``info`` is for), with the missing date as one of its problems; a
    spec that cannot be read at all is reported with its error instead of stopping the others."""
    scenes: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    for spec in specs:
        try:
            found = survey_scenes([spec], band_order=band_order, require_date=False)
        except GroundbreakError as exc:
            scenes.append({"id": None, "path": spec, "usable": False, "fit": None,
                           "problems": [{"code": exc.code, "message": exc.message, "hint": exc.hint}]})
            continue
        skipped.extend({"path": s.path, "reason": s.reason} for s in found.skipped)
        for scene in found.scenes:
            doc = describe_scene(scene)
            fit, problems = fit_scene(scene, model, allow_resample=allow_resample)
            if not scene.has_date:
                doc["date"] = None
            doc["problems"] = [{"code": p.code, "message": p.message, "hint": p.hint} for p in problems]
            doc["usable"] = fit is not None
            doc["fit"] = None if fit is None else {"resolution_m": round(fit.resolution_m, 3),
                                                   "model_gsd": fit.model_gsd, "resampled": fit.resampled}
            scenes.append(doc)
    return {"model": model.model_id, "scenes": scenes, "skipped": skipped}


@click.command("info")
@click.argument("scenes", nargs=-1, required=True)
@options.model
@options.band_order
@options.allow_resample
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def command(scenes: Tuple[str, ...], model_path: Optional[str], band_order: Optional[Tuple[str, ...]],
            allow_resample: bool, as_json: bool) -> None:
    """Bands, dtype, CRS, resolution, date and mask sources the engine would use, and whether each
    scene can be used with the model (default: the bundled one) and why not.

    \b
    $ groundbreak info scenes/*.tif
    $ groundbreak info scenes/ --model models/mine --json
    """
    model = load_model_package(model_path)
    doc = survey(scenes, model, band_order=band_order, allow_resample=allow_resample)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    for scene in doc["scenes"]:
        click.echo(_text(scene, model))
    for s in doc["skipped"]:
        click.echo("skipped       %s: %s" % (s["path"], s["reason"]))


def _text(doc: Dict[str, Any], model: ModelPackage) -> str:
    if doc.get("id") is None:
        return "%s\n  unusable    %s" % (doc["path"], "; ".join(p["message"] for p in doc["problems"]))
    crs = doc.get("crs") or {}
    size = doc.get("size") or {}
    res = doc.get("resolution") or ["?", "?"]
    bands = ", ".join("%d:%s" % (b.get("index"), b.get("name") or "?") for b in doc.get("bands", []))
    fit = doc.get("fit")
    lines = [
        "%s" % doc.get("id"),
        "  path        %s" % doc.get("path"),
        "  date        %s" % ("none" if doc.get("date") is None
                              else "%s (from %s)" % (doc["date"], doc["date_source"])),
        "  crs         EPSG:%s %s" % (crs.get("epsg"), crs.get("name", "")),
        "  size        %s x %s px, %s bands, %s" % (size.get("width"), size.get("height"), size.get("bands"),
                                                   doc.get("dtype")),
        "  resolution  %s x %s%s" % (res[0], res[1], "" if not fit or not fit["resampled"] else
                                     " (%.2f m on the ground, resampled to the model's %.2f m grid)"
                                     % (fit["resolution_m"], fit["model_gsd"])),
        "  bands       %s (names from %s)" % (bands, doc.get("band_names_source")),
        "  nodata      %s" % (doc.get("nodata"),),
    ]
    if doc.get("alpha_band"):
        lines.append("  alpha band  %s (used as a mask, never as data)" % doc["alpha_band"])
    masks = doc.get("mask_sources") or []
    for m in masks:
        lines.append("  mask        %s (%s, found by %s)" % (m.get("path"), m.get("kind"), m.get("origin")))
    if not masks:
        lines.append("  mask        none besides nodata/alpha")
    for w in doc.get("warnings", []):
        lines.append("  warning     %s" % w)
    if doc["usable"]:
        lines.append("  model       usable with %s" % model.model_id)
    for p in doc["problems"]:
        lines.append("  problem     %s\n              hint: %s" % (p["message"], p["hint"]))
    return "\n".join(lines)
