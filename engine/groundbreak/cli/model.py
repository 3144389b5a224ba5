"""``groundbreak model``: show a model package, and the sub-commands that make and change packages."""

from __future__ import annotations

import json
from typing import List, Optional, Tuple

import click

from ..model import load_model_package


class _ModelGroup(click.Group):
    """``groundbreak model [PATH]`` shows a package; ``groundbreak model SUBCOMMAND …`` runs one.

    A first argument that is not a sub-command is the package to show, so the short form keeps working."""

    def resolve_command(self, ctx: click.Context, args: List[str]) -> Tuple[Optional[str], Optional[click.Command],
                                                                            List[str]]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            return "show", self.commands["show"], args  # `model PATH`, `model --json`, `model PATH --json`
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        # Options of `show` given without the sub-command name must reach `show`, not the group.
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("model", cls=_ModelGroup, invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Model packages: show one (the default: the bundled demo model), publish, quantize.

    \b
    $ groundbreak model                       # the bundled model: bands, GSD, classes, demo flag
    $ groundbreak model models/my-model --json
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@command.command("show")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show(path: Optional[str] = None, as_json: bool = False) -> None:
    """Show a model package: bands, GSD, classes, threshold, provenance.

    \b
    $ groundbreak model show models/my-model
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


def _register() -> None:
    from . import model_publish, model_quantize

    command.add_command(model_publish.command)
    command.add_command(model_quantize.command)


_register()
