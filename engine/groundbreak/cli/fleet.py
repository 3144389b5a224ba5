"""``groundbreak fleet``: plan, run, watch, retry and merge a shared queue over many AOIs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import click

from ..errors import UsageError
from ..reporter import Reporter
from . import options
from .common import expand_variadic, install_cancel, make_reporter, open_model
from .options import mask_rules_from


class _FleetGroup(click.Group):
    """Accepts ``--aois`` (the fleet's plural spelling) for the shared ``--aoi`` option."""

    def parse_args(self, ctx: click.Context, args):
        args = ["--aoi" if a == "--aois" else a for a in args]
        return super().parse_args(ctx, expand_variadic(args))


@click.group("fleet", cls=_FleetGroup)
def command() -> None:
    """One shared queue over thousands of AOIs and many dates, on a process pool or Dask.

    \b
    $ groundbreak fleet plan --aois aois.gpkg --scenes 'scenes/*.tif' --ledger run.ledger --threads 1
    $ groundbreak fleet run --ledger run.ledger --local 2            # a LocalCluster of 2 workers
    $ groundbreak fleet run --ledger run.ledger --scheduler tcp://10.0.0.5:8786
    $ groundbreak fleet status --ledger run.ledger
    $ groundbreak fleet retry --ledger run.ledger && groundbreak fleet run --ledger run.ledger --local 2
    $ groundbreak fleet aggregate --ledger run.ledger --out detections.gpkg
    $ groundbreak fleet cost --ledger run.ledger --csv cost.csv
    """


ledger_option = click.option("--ledger", required=True, type=click.Path(dir_okay=False),
                             help="The run's SQLite ledger (made by `fleet plan`).")


@command.command("plan")
@options.input_options
@click.option("--ledger", required=True, type=click.Path(dir_okay=False), help="The ledger file to create.")
@click.option("--parts", default=None, metavar="PATH|URL",
              help="Where workers write part files: a shared folder or an fsspec URL (default: LEDGER.parts "
                   "beside the ledger).")
@click.option("--unit-chips", default=1024, show_default=True, type=click.IntRange(1, 100_000),
              help="Chips per unit of work (roughly a thousand keeps scheduling overhead under 1%).")
@click.option("--node-cores", default=2, show_default=True, type=click.IntRange(1, 1024),
              help="Cores of the node --price-per-hour is quoted for (a worker costs its --threads share).")
@options.batch_size
@options.runtime
@options.force_runtime
@click.option("--readers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Reader threads per worker.")
@click.option("--overwrite", is_flag=True, help="Replace an existing ledger (its progress is lost).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (with per-AOI figures) as JSON on stdout.")
@click.pass_context
def plan_command(ctx: click.Context, **params: Any) -> None:
    """Plan a fleet run: units deduplicated across AOIs, chips, km² and expected cost per AOI.

    --threads is per worker: give 1 to run one worker per core.

    \b
    $ groundbreak fleet plan --aois sites.gpkg --scenes catalog.json --ledger run.ledger --threads 1
    $ groundbreak fleet plan --aois a.gpkg --scenes 's/*.tif' --ledger /shared/run.ledger --parts s3://bkt/run
    """
    from ..fleet import plan_fleet
    from ..pipeline import RunOptions

    reporter = make_reporter(params.pop("events"), "fleet-plan")
    ctx.obj["reporter"] = reporter
    model = open_model(params.pop("model_path"), reporter)
    as_json = params.pop("as_json")
    run_options = RunOptions(min_valid=params.pop("min_valid"), batch_size=params.pop("batch_size"),
                             threads=params.pop("threads"), price_per_hour=params.pop("price_per_hour"),
                             runtime=params.pop("runtime"), readers=params.pop("readers"),
                             force_runtime=params.pop("force_runtime"))
    result = plan_fleet(
        list(params.pop("aois")), list(params.pop("scenes")), model, params.pop("ledger"), options=run_options,
        parts=params.pop("parts"), unit_chips=params.pop("unit_chips"), node_cores=params.pop("node_cores"),
        aoi_id_field=params.pop("aoi_id_field"), band_order=params.pop("band_order"), date=params.pop("date"),
        grid_epsg=params.pop("grid_epsg"), mask_rules=mask_rules_from(params),
        allow_resample=params.pop("allow_resample"), overwrite=params.pop("overwrite"), reporter=reporter,
        command=" ".join(shlex.quote(a) for a in sys.argv))
    stats = result.stats()
    reporter.result({"ledger": str(result.ledger), "parts": result.parts}, stats,
                    {"expected_usd": stats["expected_usd"], "price_per_hour": run_options.price_per_hour})
    reporter.done("ok", 0)
    if as_json:
        doc = dict(stats, ledger=str(result.ledger), parts=result.parts,
                   aois=[{"aoi_id": a.aoi_id, "km2": round(a.km2, 6), "ground_chips": a.ground_chips,
                          "chip_scenes": a.chip_scenes, "share": round(a.share, 4),
                          "expected_usd": round(a.expected_usd, 8)} for a in result.aois])
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    elif not ctx.obj.get("quiet"):
        _print_plan(result)


@command.command("run")
@ledger_option
@click.option("--local", type=click.IntRange(1, 1024), default=None, metavar="N",
              help="Start a Dask LocalCluster of N process workers on this machine.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Use a running Dask scheduler (tcp://host:8786).")
@click.option("--processes", type=click.IntRange(1, 1024), default=None, metavar="N",
              help="A local pool of N processes without Dask.")
@click.option("--in-process", "in_process", is_flag=True, help="Run units one by one in this process (debugging).")
@click.option("--window", type=click.IntRange(1, 100_000), default=None,
              help="Units in flight at most (default: twice the workers).")
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Tries of a unit before it is split to isolate the chips at fault.")
@click.option("--backoff", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds before the first retry of a failed unit (doubling for each further one).")
@click.option("--dashboard", default=":8787", show_default=True, metavar="ADDRESS",
              help="Dask dashboard address of a --local cluster (':0' picks a free port).")
@options.events
@click.pass_context
def run_command(ctx: click.Context, ledger: str, local: Optional[int], scheduler: Optional[str],
                processes: Optional[int], in_process: bool, window: Optional[int], max_attempts: int,
                backoff: float, dashboard: str, events: Optional[str]) -> None:
    """Run (or resume) every pending unit of the ledger.

    Exit codes: 0 done (or cancelled), 1 error, 2 usage error, 3 finished with failed chips.

    \b
    $ groundbreak fleet run --ledger run.ledger --local 2
    $ groundbreak fleet run --ledger /shared/run.ledger --scheduler tcp://10.0.0.5:8786 --events jsonl
    """
    from ..fleet import DaskExecutor, InProcessExecutor, Ledger, ProcessPoolExecutor, RetryPolicy, run_fleet

    reporter = make_reporter(events, "fleet-run")
    ctx.obj["reporter"] = reporter
    chosen = [x for x in (local, scheduler, processes, in_process or None) if x is not None]
    if len(chosen) != 1:
        raise UsageError("choose where units run: exactly one of --local N, --scheduler ADDRESS, --processes N "
                         "or --in-process", hint="e.g. --local 2 on a 2-core machine")
    reporter.hello(None)
    with Ledger(ledger, readonly=True) as led:
        threads = led.spec.threads
    cores = os.cpu_count() or 1
    local_workers = local or processes
    if local_workers and local_workers * threads > cores:
        reporter.warning("oversubscribed", "%d worker(s) × %d thread(s) on %d core(s): workers will share cores" % (
            local_workers, threads, cores), "plan with --threads 1 and run one worker per core")
    if local is not None:
        executor: Any = DaskExecutor(local=local, threads=threads, dashboard=dashboard)
    elif scheduler is not None:
        executor = DaskExecutor(address=scheduler, threads=threads)
    elif processes is not None:
        executor = ProcessPoolExecutor(processes, threads=threads)
    else:
        executor = InProcessExecutor(threads=threads)
    cancel = install_cancel(events)
    policy = RetryPolicy(max_attempts=max_attempts, backoff_s=backoff)
    show_bar = not events and not ctx.obj.get("quiet") and sys.stderr.isatty()
    with _progress_line(reporter, enabled=show_bar):
        result = run_fleet(ledger, executor, policy=policy, window=window, reporter=reporter, cancel=cancel)
    reporter.result({"ledger": str(Path(ledger).resolve())}, result.stats(),
                    {"usd": round(result.cost_usd, 6)})
    if not ctx.obj.get("quiet"):
        _print_run(result)
    reporter.done(result.status.value, result.exit_code)
    ctx.exit(result.exit_code)


@command.command("status")
@ledger_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
def status_command(ledger: str, as_json: bool) -> None:
    """Done / running / failed units, chips/s, cost so far and ETA (safe while a run is going).

    \b
    $ groundbreak fleet status --ledger run.ledger
    $ watch -n 10 groundbreak fleet status --ledger run.ledger
    """
    from ..fleet import fleet_status

    status = fleet_status(ledger)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2, sort_keys=True))
        return
    u = status.units
    lines = [
        "Fleet run %s  (%s)" % (status.run_id, "runner active" if status.runner_active else "no runner active"),
        "  units      %d done, %d running, %d pending, %d failed, %d split" % (
            u["done"], u["running"], u["pending"], u["failed"], u["split"]),
        "  chips      %d of %d processed (%.1f%%), %d failed, %d detection(s)" % (
            status.chips_done, status.chips_total, 100.0 * status.chips_done / max(1, status.chips_total),
            status.chips_failed, status.detections),
        "  speed      %s chips/s, ETA %s" % (status.chips_per_s or "n/a", _duration(status.eta_s)),
        "  cost       %s so far, ~%s expected in all" % (_usd(status.cost_so_far_usd),
                                                        _usd(status.expected_total_usd)),
    ]
    for f in status.failures[-5:]:
        lines.append("  failure    %s (attempt %d, %s): %s" % (f["unit_id"], f["attempt"], f["kind"], f["error"][:160]))
    click.echo("\n".join(lines))


@command.command("retry")
@ledger_option
def retry_command(ledger: str) -> None:
    """Queue failed units (with fresh attempts) and units' failed chips again; then `fleet run`.

    \b
    $ groundbreak fleet retry --ledger run.ledger && groundbreak fleet run --ledger run.ledger --local 2
    """
    from ..fleet import retry_failed

    r = retry_failed(ledger)
    click.echo("re-queued %d failed unit(s) (%d chips) and %d retry unit(s) of failed chips (%d chips); "
               "now run: groundbreak fleet run --ledger %s ..." % (r.units_reset, r.chips_reset, r.retry_units,
                                                                   r.retry_chips, ledger), err=True)


@command.command("aggregate")
@ledger_option
@click.option("--out", required=True, type=click.Path(), help="Output .gpkg (or a folder for --format parquet).")
@click.option("--format", "fmt", type=click.Choice(["gpkg", "parquet"]), default="gpkg", show_default=True,
              help="A GeoPackage with the layers of `run`, or GeoParquet files for very large outputs.")
@click.option("--partial", is_flag=True, help="Merge what is done even if units are still pending.")
@click.option("--overwrite", is_flag=True, help="Replace --out.")
@click.option("--no-timeline", is_flag=True, help="Skip the per-AOI timeline stage.")
@options.events
@click.pass_context
def aggregate_command(ctx: click.Context, ledger: str, out: str, fmt: str, partial: bool, overwrite: bool,
                      no_timeline: bool, events: Optional[str]) -> None:
    """Merge the run's part files into one output (same layers as `groundbreak run`).

    \b
    $ groundbreak fleet aggregate --ledger run.ledger --out detections.gpkg
    $ groundbreak fleet aggregate --ledger run.ledger --out detections.parquet --format parquet
    """
    from ..fleet import OutputFormat, aggregate

    reporter = make_reporter(events, "fleet-aggregate")
    ctx.obj["reporter"] = reporter
    reporter.hello(None)
    if fmt == "gpkg" and Path(out).suffix.lower() != ".gpkg":
        raise UsageError("--out must be a .gpkg file for --format gpkg (got %s)" % out, hint="e.g. --out out.gpkg")
    result = aggregate(ledger, out, fmt=OutputFormat(fmt), allow_partial=partial, overwrite=overwrite,
                       reporter=reporter, timeline=not no_timeline)
    stats = {"units": result.units, "chips": result.chips, "detections": result.detections,
             "failed_chips": result.failed_chips, "seconds": round(result.seconds, 3),
             "timelines": None if result.timelines is None else len(result.timelines)}
    reporter.result({fmt: str(result.output)}, stats, result.cost)
    if not ctx.obj.get("quiet"):
        click.echo("merged %d unit(s): %d chip(s), %d detection(s), %d failed chip(s) -> %s%s" % (
            result.units, result.chips, result.detections, result.failed_chips, result.output,
            "" if result.timelines is not None or fmt != "gpkg" else " (timeline stage not installed)"), err=True)
    reporter.done(result.status.value, result.exit_code)
    ctx.exit(result.exit_code)


@command.command("cost")
@ledger_option
@click.option("--instance-startup", default=180.0, show_default=True, type=click.FloatRange(0),
              help="Seconds an instance per AOI is billed before it processes a chip (boot, image, model).")
@click.option("--instance-min-billing", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Minimum billed seconds per instance (3600 for hourly billing).")
@click.option("--billing-increment", default=1.0, show_default=True, type=click.FloatRange(0.001),
              help="Billing granularity in seconds (1 per-second billing, 3600 hourly).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (with every AOI) as JSON on stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write per-AOI costs as CSV.")
def cost_command(ledger: str, instance_startup: float, instance_min_billing: float, billing_increment: float,
                 as_json: bool, csv_path: Optional[str]) -> None:
    """Cost per AOI, total, per km² and km² per CPU-hour; against one instance per AOI.

    Measured once units are done (cost per chip from the fleet's billed time), expected before.

    \b
    $ groundbreak fleet cost --ledger run.ledger
    $ groundbreak fleet cost --ledger run.ledger --instance-min-billing 3600 --billing-increment 3600
    """
    from ..fleet import InstanceModel, Ledger, cost_report

    model = InstanceModel(startup_s=instance_startup, min_billing_s=instance_min_billing,
                          billing_increment_s=billing_increment)
    with Ledger(ledger, readonly=True) as led:
        report = cost_report(led, instance=model)
    if csv_path:
        import csv

        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["aoi_id", "km2", "chip_scenes", "share", "shared_usd", "instance_usd"])
            for a in report.aois:
                writer.writerow([a.aoi_id, "%.6f" % a.km2, a.chip_scenes, "%.4f" % a.share, "%.8f" % a.shared_usd,
                                 "%.8f" % a.instance_usd])
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
        return
    ratio = report.instance_ratio
    click.echo("\n".join([
        "Fleet cost (%s)" % ("measured" if report.measured else "expected: nothing has run yet"),
        "  total          %s for %d chip(s), %s per chip, %s per km² scanned" % (
            _usd(report.total_usd), report.chips, _usd(report.usd_per_chip), _usd(report.per_km2_usd)),
        "  efficiency     %.1f km² per CPU-hour (%.3f CPU-hours), %.1f chips/s per node" % (
            report.km2_per_cpu_hour or 0.0, report.cpu_hours, report.node_chips_per_s),
        "  per AOI        %d AOI(s); the 5 dearest: %s" % (len(report.aois), ", ".join(
            "%s %s" % (a.aoi_id, _usd(a.shared_usd)) for a in sorted(report.aois, key=lambda a: -a.shared_usd)[:5])),
        "  one instance   per AOI: %s in all (%s× the shared queue) at %.0f s start-up, %.0f s minimum billing" % (
            _usd(report.instance_total_usd), "n/a" if ratio is None else "%.1f" % ratio,
            model.startup_s, model.min_billing_s),
    ]))


# -- printing ---------------------------------------------------------------------------------------
def _usd(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return "$%.2e" % value if value < 0.01 else "$%.4f" % value


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    return "%dh%02dm" % (s // 3600, s % 3600 // 60) if s >= 3600 else "%dm%02ds" % (s // 60, s % 60)


def _print_plan(result: Any) -> None:
    aois = sorted(result.aois, key=lambda a: -a.share)
    lines = [
        "", "Fleet plan %s -> %s" % (result.run_id, result.ledger),
        "  AOIs        %d, %.3f km² (%.3f km² scanned over %d scene(s))" % (
            len(result.aois), result.aoi_km2, result.scanned_km2, result.scenes),
        "  work        %d chip(s) on %d ground chip(s) in %d unit(s); parts in %s" % (
            result.chips, result.ground_chips, result.units, result.parts),
        "  expected    %.0f worker-seconds at %.1f chips/s (%s), %s" % (
            result.expected_worker_seconds, result.chips_per_s, result.throughput_source, _usd(result.expected_usd)),
    ]
    for a in aois[:10]:
        lines.append("  AOI %-20s %10.3f km² %8d chips %12s" % (a.aoi_id[:20], a.km2, a.chip_scenes,
                                                               _usd(a.expected_usd)))
    if len(aois) > 10:
        lines.append("  … and %d more AOIs (--json lists every one)" % (len(aois) - 10))
    click.echo("\n".join(lines), err=True)


def _print_run(result: Any) -> None:
    u = result.units
    click.echo("\n".join([
        "", "Fleet run %s  (%s)" % (result.run_id, result.status.value),
        "  units      %d done, %d failed, %d split, %d pending" % (u["done"], u["failed"], u["split"], u["pending"]),
        "  chips      %d of %d processed (%d in this run), %d failed, %d detection(s)" % (
            result.chips_done, result.chips_total, result.chips_this_run, result.failed_chips, result.detections),
        "  speed      %s chips/s over %.1f s on %s" % (result.chips_per_s, result.seconds,
                                                       result.executor.get("executor")),
        "  cost       %s of worker time so far" % _usd(result.cost_usd),
    ]), err=True)


@contextlib.contextmanager
def _progress_line(reporter: Reporter, *, enabled: bool) -> Iterator[None]:
    """A one-line progress bar with rate, ETA and cost, fed by the runner's progress events."""
    if not enabled:
        yield
        return

    def listen(event: Any) -> None:
        if event.type == "stage":
            click.echo("\r%s" % event.get("message"), err=True)
        if event.type != "progress" or event.get("stage") != "infer":
            return
        done, total = event.get("done"), max(1, event.get("total"))
        width = 30
        filled = int(width * done / total)
        counts = event.get("counts") or {}
        line = "\r[%s%s] %d/%d chips  %d running  %s chips/s  ETA %s  %s " % (
            "#" * filled, "-" * (width - filled), done, total, counts.get("in_flight", 0),
            event.get("chips_per_s") or "-", _duration(event.get("eta_s")), _usd(event.get("cost_usd")))
        click.echo(line, nl=False, err=True)

    previous = reporter.listener
    reporter.listener = listen
    try:
        yield
    finally:
        reporter.listener = previous
        click.echo("", err=True)
