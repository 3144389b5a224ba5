"""``groundbreak info``."""

from __future__ import annotations

import json

import click

from ..scene import describe_scene, discover_scenes


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
    found = discover_scenes(list(scenes), band_order=order)
    docs = [describe_scene(s) for s in found]
    if as_json:
        click.echo(json.dumps({"scenes": docs}, indent=2, default=str))
        return
    for doc in docs:
        click.echo(_text(doc))


def _text(doc: dict) -> str:
    lines = ["%s" % doc.get("scene_id")]
    for key in ("path", "date", "date_source", "epsg", "crs_name", "res", "width", "height", "count", "dtype",
                "bands", "band_names_source", "nodata", "alpha_band", "internal_mask", "mask_sources", "warnings"):
        if key in doc:
            lines.append("  %-18s %s" % (key, doc[key]))
    return "\n".join(lines)
