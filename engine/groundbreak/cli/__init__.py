"""The ``groundbreak`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

import click

from .. import __version__
from ..errors import GroundbreakError, InternalError

#: Before the sub-commands (and with them rasterio, GDAL, …) are imported: the start-up a user waits
#: for before a run starts, which ``plan`` includes in its time estimate.
PROCESS_START = time.perf_counter()


class _Group(click.Group):
    """Reports GroundbreakError once, as ``Error:``/``Hint:``, with the documented exit codes."""

    def parse_args(self, ctx: click.Context, args):
        from .common import expand_variadic

        return super().parse_args(ctx, expand_variadic(args))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GroundbreakError as exc:
            _report(exc, ctx)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:
            # A bug must still end the stream with error and done events, or a client waits forever.
            logging.getLogger("groundbreak").exception("unexpected error")
            _report(InternalError(
                "unexpected %s: %s" % (type(exc).__name__, exc),
                hint="this is a bug in Groundbreak: please report it with the traceback above (run with -v for "
                     "more detail); outputs written so far are kept and a re-run resumes",
            ), ctx)
            ctx.exit(InternalError.exit_code)


def _report(exc: GroundbreakError, ctx: click.Context) -> None:
    reporter = (ctx.obj or {}).get("reporter") if isinstance(ctx.obj, dict) else None
    if reporter is not None and reporter.streaming:
        reporter.error(exc.code, exc.message, exc.hint, exc.retryable, problems=exc.problems)
        reporter.done("failed", exc.exit_code)
    click.echo("Error: %s" % exc.message, err=True)
    if exc.hint:
        click.echo("Hint: %s" % exc.hint, err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="groundbreak")
@click.option("-v", "--verbose", count=True, help="More log detail on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Find heavy construction activity in 4-band (R, G, B, NIR) imagery, on CPUs.

    \b
    $ groundbreak demo                                  # everything on built-in demo data
    $ groundbreak info scenes/*.tif                     # what the engine sees in your scenes
    $ groundbreak plan --aoi site.gpkg --scenes 'scenes/*.tif'
    $ groundbreak run  --aoi site.gpkg --scenes 'scenes/*.tif' --out detections.gpkg
    $ groundbreak train --labels labels.gpkg --scenes 'scenes/*.tif' --out models/mine
    $ groundbreak evaluate --model models/mine --labels labels.gpkg --scenes 'scenes/*.tif'
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("groundbreak")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)] + [handler]
    root.setLevel(level)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def _register() -> None:
    from . import demo, evaluate, info, model, plan, run, timeline, train

    for module in (demo, info, plan, run, model, train, evaluate, timeline):
        cli.add_command(module.command)


_register()


def main(argv: Optional[list] = None) -> None:
    # A bounded GDAL block cache keeps a run's memory flat whatever the AOI size (GDAL's default,
    # 5% of RAM, grows with every tile read). Set before GDAL reads anything; the user's value wins.
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    cli.main(args=argv, prog_name="groundbreak")
