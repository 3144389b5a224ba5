"""``groundbreak run``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..errors import PartialRunError, UsageError
from ..pipeline import RunOptions, run_detection
from .common import input_options, open_model, mask_rules_from, install_cancel, load_inputs, make_reporter
from .summary import print_run_summary, progress_listener


@click.command("run")
@input_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output GeoPackage (resumes if it exists).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024), help="Chips per forward pass.")
@click.option("--runtime", default=None,
              type=click.Choice(["auto", "eager", "torchscript", "openvino", "openvino-bf16", "openvino-int8",
                                 "torch-int8"]),
              help="Inference runtime (default: the model package's choice, normally auto = the fastest float "
                   "runtime that matches eager fp32 within tolerance; int8 only when named).")
@click.option("--readers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Reader threads for the I/O stage (decompression runs in parallel).")
@click.option("--overwrite", is_flag=True, help="Replace --out instead of resuming into it.")
@click.pass_context
def command(ctx, aois, scenes, model_path, min_valid, threads, price_per_hour, aoi_id_field, band_order, date,
            grid_epsg, allow_resample, events, out, batch_size, runtime, readers, overwrite, **mask_options):
    """Detect construction activity: plan, screen, infer in batches, write a GeoPackage.

    Re-running the same command after an interruption resumes without redoing finished chips.
    Exit codes: 0 done (or cancelled), 1 error, 2 usage error, 3 finished with failed chips.

    \b
    $ groundbreak run --aoi site.gpkg --scenes 'scenes/*.tif' --out detections.gpkg
    $ groundbreak run --aoi a.geojson --aoi b.shp --scenes catalog.json --out out.gpkg --batch-size 64
    $ groundbreak run ... --events jsonl        # JSON lines on stdout for clients
    """
    reporter = make_reporter(events, "run")
    ctx.obj["reporter"] = reporter
    cancel = install_cancel(events)
    out_path = Path(out).expanduser().resolve()
    if out_path.suffix.lower() != ".gpkg":
        raise UsageError("--out must be a .gpkg file (got %s)" % out, hint="e.g. --out detections.gpkg")

    model = open_model(model_path, reporter)
    plan = load_inputs(aois=aois, scenes=scenes, model=model, aoi_id_field=aoi_id_field,
                              band_order=band_order, date=date, grid_epsg=grid_epsg, reporter=reporter,
                              mask_rules=mask_rules_from(mask_options), allow_resample=allow_resample)
    options = RunOptions(min_valid=min_valid, batch_size=batch_size, threads=threads,
                         price_per_hour=price_per_hour, runtime=runtime, readers=readers,
                         overwrite=overwrite)
    show_bar = not events and not ctx.obj.get("quiet") and sys.stderr.isatty()
    with progress_listener(reporter, enabled=show_bar):
        result = run_detection(plan, model, out_path, options=options, reporter=reporter, cancel=cancel,
                               command=" ".join(shlex.quote(a) for a in sys.argv))
    reporter.result({"gpkg": str(result.output)}, result.stats, result.cost.to_dict())
    if not ctx.obj.get("quiet"):
        print_run_summary(result, model)
    if result.status == "partial":
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
    reporter.done(result.status, result.exit_code)
    ctx.exit(result.exit_code)
