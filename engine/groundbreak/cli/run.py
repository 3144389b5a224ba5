"""``groundbreak run``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import PartialRunError, UsageError
from ..pipeline import RunOptions, RunStatus, run_detection
from . import PROCESS_START, options
from .common import aggregate, install_cancel, make_reporter, open_model, plan_from
from .summary import print_run_summary, progress_listener


@click.command("run")
@options.input_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output GeoPackage (resumes if it exists).")
@options.batch_size
@options.runtime
@options.force_runtime
@options.readers
@options.streams
@click.option("--no-timeline", is_flag=True,
              help="Do not build sites with dates at the end of a multi-date run (`groundbreak timeline` can later).")
@click.option("--overwrite", is_flag=True,
              help="Replace --out instead of resuming into it (the old file is replaced once the new run has "
                   "committed its first batch).")
@click.pass_context
def command(ctx: click.Context, **params: Any) -> None:
    """Detect construction activity: plan, screen, infer in batches, write a GeoPackage.

    Re-running the same command after an interruption resumes without redoing finished chips.
    Exit codes: 0 done (or cancelled), 1 error, 2 usage error, 3 finished with failed chips.

    \b
    $ groundbreak run --aoi site.gpkg --scenes 'scenes/*.tif' --out detections.gpkg
    $ groundbreak run --aoi a.geojson --aoi b.shp --scenes catalog.json --out out.gpkg --batch-size 64
    $ groundbreak run ... --events jsonl        # JSON lines on stdout for clients
    """
    events = params.pop("events")
    reporter = make_reporter(events, "run")
    ctx.obj["reporter"] = reporter
    cancel = install_cancel(events)
    out = str(params.pop("out"))
    out_path = Path(out).expanduser().resolve()
    if out_path.suffix.lower() != ".gpkg":
        raise UsageError("--out must be a .gpkg file (got %s)" % out, hint="e.g. --out detections.gpkg")
    model = open_model(params.pop("model_path"), reporter)
    plan = plan_from(params, model, reporter)
    timeline = not params.pop("no_timeline") and len({s.date for s in plan.scenes}) > 1
    run_options = RunOptions(**params)
    show_bar = not events and not ctx.obj.get("quiet") and sys.stderr.isatty()
    with progress_listener(reporter, enabled=show_bar):
        result = run_detection(plan, model, out_path, options=run_options, reporter=reporter, cancel=cancel,
                               command=" ".join(shlex.quote(a) for a in sys.argv),
                               startup_s=time.perf_counter() - PROCESS_START)
    if timeline and result.status in (RunStatus.OK, RunStatus.PARTIAL):
        result = aggregate(result, reporter)
    reporter.result({"gpkg": str(result.output)}, result.stats.to_dict(), result.cost.to_dict())
    if not ctx.obj.get("quiet"):
        print_run_summary(result)
    if result.status is RunStatus.PARTIAL:
        failed = ", ".join("%s on %s" % (chip, scene) for scene, chip, _ in result.failed[:10])
        more = "" if len(result.failed) <= 10 else " and %d more" % (len(result.failed) - 10)
        err = PartialRunError(
            "%d chip(s) could not be read: %s%s" % (len(result.failed), failed, more),
            hint="details are in the 'chips' layer (status = failed); fix or replace the scene file, then "
                 "re-run the same command: only the failed chips are retried",
        )
        if reporter.streaming:
            reporter.warning(err.code, err.message, err.hint)
        click.echo("Error: %s\nHint: %s" % (err.message, err.hint), err=True)
    reporter.done(result.status.value, result.exit_code)
    ctx.exit(result.exit_code)
