"""``groundbreak demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from ..metrics import fmt
from ..pipeline import RunOptions
from . import options
from .common import install_cancel, make_reporter, open_model
from .summary import print_run_summary, progress_listener


@click.command("demo")
@click.option("--out-dir", default="groundbreak-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the detections GeoPackage and the quick-look PNG go.")
@click.option("--seed", default=7, show_default=True, help="Demo world seed (the world is cached per seed).")
@options.model
@options.threads
@options.batch_size
@options.runtime
@options.events
@click.pass_context
def command(ctx: click.Context, out_dir: str, seed: int, model_path: Optional[str], threads: int,
            batch_size: int, runtime: Optional[str], events: Optional[str]) -> None:
    """Generate a synthetic demo world and run the whole pipeline on it.

    Writes OUT_DIR/detections.gpkg (open it in QGIS; it holds the sites too), OUT_DIR/quicklook.png,
    OUT_DIR/timelines.png (score over time per site), OUT_DIR/smart/ (the sites as SMART site
    models), OUT_DIR/truth/ (the world's truth as SMART) and OUT_DIR/sitescore/report.json.

    \b
    $ groundbreak demo
    $ groundbreak demo --out-dir /tmp/gb-demo --seed 11
    """
    from ..demo import run_demo

    reporter = make_reporter(events, "demo")
    ctx.obj["reporter"] = reporter
    cancel = install_cancel(events)
    model = open_model(model_path, reporter)
    run_options = RunOptions(threads=threads, batch_size=batch_size, runtime=runtime)
    show_bar = not events and not ctx.obj.get("quiet") and sys.stderr.isatty()
    with progress_listener(reporter, enabled=show_bar):
        result = run_demo(Path(out_dir).resolve(), seed=seed, model=model, options=run_options,
                          reporter=reporter, cancel=cancel)
    reporter.result({"gpkg": str(result.run.output), "quicklook": str(result.quicklook),
                     "timelines": str(result.timeline_png), "smart": str(result.smart_dir)},
                    {**result.run.stats.to_dict(), "truth": result.truth, "sites": result.sites},
                    result.run.cost.to_dict())
    if not ctx.obj.get("quiet"):
        print_run_summary(result.run)
        t = result.truth
        s: dict = dict(result.sites)
        click.echo(
            "  vs. truth     precision %s, recall %s, F1 %s on %d inferred chips (demo world labels)\n"
            "  sites         %d found of %d built (%d with the start within one revisit), %d reported where "
            "none was built; site F1 %s (SMART scoring)\n"
            "  start dates   error per found site, in revisits: %s (days: mean |error| %s, median %s, max %s)\n"
            "  quick-look    %s\n  timelines     %s\n  SMART         %s (proposals), %s (truth)\n"
            "  world         %s (synthetic, cached)\n"
            "  next          open %s in QGIS, or run `groundbreak run --help`"
            % (fmt(t["precision"], ".2f"), fmt(t["recall"], ".2f"), fmt(t["f1"], ".2f"), t["chips_scored"],
               s["found"], s["truth_sites"],
               s["found_with_start_within_one_revisit"], s["false_sites"], s["f1"],
               " ".join("%+d" % e if e is not None else "?" for e in s["start_error_revisits"]),
               s["start_error_days"].get("mean_abs"), s["start_error_days"].get("median"),
               s["start_error_days"].get("max_abs"), result.quicklook, result.timeline_png, result.smart_dir,
               result.smart_dir.parent / "truth", result.world_dir, result.run.output),
            err=True,
        )
    reporter.done(result.run.status.value, result.run.exit_code)
    ctx.exit(result.run.exit_code)
