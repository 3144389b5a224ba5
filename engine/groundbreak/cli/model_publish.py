"""``groundbreak model publish``: a trained package with its evaluation figures and runtime validation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import click

from ..names import RUNTIME_CHOICES


def _pairs(values: Tuple[str, ...], what: str) -> List[Tuple[str, str]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter("%r is not NAME=report.json (e.g. demo_world_7=eval/report.json)" % value,
                                     param_hint=what)
        out.append((name, path))
    return out


@click.command("publish")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("reports", nargs=-1, metavar="NAME=REPORT...")
@click.option("--runtime-check", "checks", multiple=True, metavar="NAME=REPORT",
              help="A report of the same data as report NAME on another --runtime: recorded in "
                   "groundbreak:runtime_validation (passed when its F1 is at most 0.01 below NAME's). Repeatable.")
@click.option("--runtime", default=None, type=click.Choice(list(RUNTIME_CHOICES)),
              help="The package's preferred runtime (groundbreak:runtime) [default: keep SRC's].")
@click.option("--command", "command_text", default="", metavar="TEXT",
              help="How to reproduce the package (recorded in the card).")
@click.option("--note", default="", metavar="TEXT", help="Text added to the card after the figures.")
@click.option("--note-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Read --note from this file.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing OUT (may be SRC itself).")
def command(src: str, out: str, reports: Tuple[str, ...], checks: Tuple[str, ...], runtime: Optional[str],
            command_text: str, note: str, note_file: Optional[str], overwrite: bool) -> None:
    """Write package SRC as OUT with evaluation reports in model.json and the model card.

    Each NAME=REPORT is a report.json from `groundbreak evaluate --out`; its figures become
    groundbreak:metrics NAME_precision, NAME_f1, NAME_false_alarms_per_km2_per_date, … and a
    row of the card's evaluation table. Every other field of model.json, the weights and the
    card's other sections are kept as they are; publishing again replaces the earlier figures.

    \b
    $ groundbreak model publish models/mine models/mine-pub world=eval-world/report.json \\
          farmland=eval-farmland/report.json --command "scripts/make_my_model.sh"
    $ groundbreak model publish models/mine models/mine world=eval/report.json \\
          --runtime-check world=eval-int8/report.json --overwrite
    """
    from ..evaluate import publish

    if note_file:
        if note:
            raise click.UsageError("give --note or --note-file, not both")
        note = Path(note_file).read_text(encoding="utf-8")
    pkg = publish(src, out, dict(_pairs(reports, "NAME=REPORT")), runtime_checks=_pairs(checks, "--runtime-check"),
                  command=command_text, runtime=runtime, note=note, overwrite=overwrite)
    click.echo("published %s (%s %s, sha256 %s)" % (pkg.root, pkg.model_id, pkg.version, pkg.sha256[:12]), err=True)
