"""``groundbreak info``."""

from __future__ import annotations

import json

import click

from ..errors import MissingDateError
from ..scene import describe_scene, discover_scenes, open_scene


def _describe_spec(spec: str, order) -> list:
    """Describe every scene of a spec; a scene without a date is still described (that is what
    ``info`` is for), with the missing date reported as a problem instead of failing."""
    try:
        return [describe_scene(s) for s in discover_scenes([spec], band_order=order)]
    except MissingDateError:
        import glob

        docs = []
        for path in sorted(glob.glob(spec)) or [spec]:
            try:
                docs.append(describe_scene(open_scene(path, band_order=order)))
            except MissingDateError as exc:
                doc = describe_scene(open_scene(path, band_order=order, date="1970-01-01"))
                doc["date"] = None
                doc["date_source"] = "missing"
                doc.setdefault("warnings", []).insert(0, "no acquisition date: %s" % exc.hint)
                docs.append(doc)
        return docs


@click.command("info")
@click.argument("scenes", nargs=-1, required=True)
@click.option("--band-order", default=None, metavar="NAMES", help="Band names for unlabelled files, e.g. red,green,blue,nir.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def command(scenes, band_order, as_json):
    """Bands, dtype, CRS, resolution, date and mask sources the engine would use.

    \b
    $ groundbreak info scenes/*.tif
    $ groundbreak info catalog.json --json
    """
    order = tuple(b.strip().lower() for b in band_order.split(",")) if band_order else None
    docs = []
    for spec in scenes:
        docs.extend(_describe_spec(spec, order))
    if as_json:
        click.echo(json.dumps({"scenes": docs}, indent=2, default=str))
        return
    for doc in docs:
        click.echo(_text(doc))


def _text(doc: dict) -> str:
    crs = doc.get("crs") or {}
    size = doc.get("size") or {}
    res = doc.get("resolution") or ["?", "?"]
    bands = ", ".join("%d:%s" % (b.get("index"), b.get("name") or "?") for b in doc.get("bands", []))
    lines = [
        "%s" % doc.get("id"),
        "  path        %s" % doc.get("path"),
        "  date        %s (from %s)" % (doc.get("date"), doc.get("date_source")),
        "  crs         EPSG:%s %s" % (crs.get("epsg"), crs.get("name", "")),
        "  size        %s x %s px, %s bands, %s" % (size.get("width"), size.get("height"), size.get("bands"),
                                                   doc.get("dtype")),
        "  resolution  %s x %s" % (res[0], res[1]),
        "  bands       %s (names from %s)" % (bands, doc.get("band_names_source")),
        "  nodata      %s" % (doc.get("nodata"),),
    ]
    if doc.get("alpha_band"):
        lines.append("  alpha band  %s (used as a mask, never as data)" % doc["alpha_band"])
    masks = doc.get("mask_sources") or []
    if masks:
        for m in masks:
            lines.append("  mask        %s (%s, found by %s)" % (m.get("path"), m.get("kind"), m.get("origin")))
    else:
        lines.append("  mask        none besides nodata/alpha")
    for w in doc.get("warnings", []):
        lines.append("  warning     %s" % w)
    return "\n".join(lines)
