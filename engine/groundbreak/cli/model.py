"""``groundbreak model``."""

from __future__ import annotations

import json

import click

from ..model import load_model_package


@click.command("model")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def command(path, as_json):
    """Show a model package (default: the bundled demo model): bands, GSD, classes, provenance.

    \b
    $ groundbreak model
    $ groundbreak model models/my-model --json
    """
    m = load_model_package(path)
    doc = {
        "model_id": m.model_id, "version": m.version, "bands": list(m.bands), "gsd": m.gsd,
        "gsd_range": list(m.gsd_range), "chip_size": m.chip_size, "classes": list(m.classes),
        "threshold": m.threshold, "demo": m.demo, "architecture": m.architecture, "sha256": m.sha256,
        "card_summary": m.card_summary, "path": str(m.root),
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        click.echo("%-13s %s" % (key, value))
    if m.demo:
        click.echo("NOTE: DEMO weights, not validated on real construction imagery.")
