"""``groundbreak timeline``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click


@click.command("timeline")
@click.option("--in", "gpkg", required=True, type=click.Path(dir_okay=False), metavar="RUN.gpkg",
              help="A run's output GeoPackage (groundbreak run/demo --out); sites are written back into it.")
@click.option("--aoi-id", default=None, metavar="ID", help="Build the sites of one AOI only (default: all chips).")
@click.option("--enter", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Score that starts activity on a clear date (default: the run's model threshold).")
@click.option("--exit", "exit_", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Activity continues while clear dates score at least this (default: enter - 0.2).")
@click.option("--min-revisits", default=2, show_default=True, type=click.IntRange(1),
              help="Clear dates an interval needs at or above --exit (2: a one-date blip is no site).")
@click.option("--end-revisits", default=2, show_default=True, type=click.IntRange(1),
              help="Consecutive clear dates below --exit that end activity (2: one low date is bridged).")
@click.option("--merge-gap", default=64.0, show_default=True, type=click.FloatRange(0), metavar="METRES",
              help="Touching chips form one site when their active cells are at most this far apart.")
@click.option("--smart", "smart_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Also write IARPA SMART region and site models (GeoJSON) into DIR.")
@click.option("--region-id", default="ZZ_R000", show_default=True, metavar="CC_R000",
              help="SMART region id (the scorer matches proposal files to truth by it, e.g. US_R001).")
@click.option("--sensor-name", default=None, type=click.Choice(["Landsat 8", "Sentinel-2", "WorldView", "Planet"]),
              help="SMART observation sensor_name (default: null).")
@click.option("--json", "as_json", is_flag=True, help="Print the sites as JSON on stdout.")
@click.pass_context
def command(ctx: click.Context, gpkg: str, aoi_id: Optional[str], enter: Optional[float], exit_: Optional[float],
            min_revisits: int, end_revisits: int, merge_gap: float, smart_dir: Optional[str], region_id: str,
            sensor_name: Optional[str], as_json: bool) -> None:
    """Turn a multi-date run into sites with start and end dates.

    Per ground chip, the score over dates (dates where the chip was masked or not covered are
    unknown, never negative); activity with hysteresis; touching active chips merged into sites.
    Writes the layers `sites` and `site_observations` into the run's GeoPackage (replacing earlier
    ones; detections are never touched), and with --smart the SMART site models.

    \b
    $ groundbreak timeline --in detections.gpkg
    $ groundbreak timeline --in detections.gpkg --enter 0.8 --exit 0.6 --min-revisits 3
    $ groundbreak timeline --in detections.gpkg --smart smart/ --region-id US_R001
    """
    from ..smart import SmartOptions, export_smart
    from ..timeline import TimelineParams, build_timeline

    params = TimelineParams(enter=enter, exit=exit_, min_revisits=min_revisits, end_revisits=end_revisits,
                            merge_gap_m=merge_gap)
    smart_options = SmartOptions(region_id=region_id, sensor_name=sensor_name) if smart_dir else None
    result = build_timeline(Path(gpkg), params, aoi_id=aoi_id)
    export = (export_smart(Path(gpkg), Path(smart_dir), smart_options, aoi_id=aoi_id)
              if smart_options and smart_dir else None)
    if as_json:
        click.echo(json.dumps({
            "gpkg": str(result.gpkg), "params": result.params.to_dict(), "threshold_source": result.threshold_source,
            "dates": list(result.dates), "stats": result.stats,
            "smart": None if export is None else {"region_model": str(export.region_model),
                                                 "site_models": [str(p) for p in export.site_models]},
            "sites": [{"site_id": s.site_id, "start_date": s.start_date, "end_date": s.end_date,
                       "ongoing": s.ongoing, "peak_score": s.peak_score, "supporting_dates": s.supporting_dates,
                       "unknown_dates": s.unknown_dates, "area_m2": round(s.area_m2, 1)} for s in result.sites],
        }, indent=2))
    elif not ctx.obj.get("quiet"):
        p = result.params
        click.echo("Timeline of %s: %d site(s) over %d date(s) (%s to %s)" % (
            result.gpkg, len(result.sites), len(result.dates), result.dates[0] if result.dates else "-",
            result.dates[-1] if result.dates else "-"), err=True)
        click.echo("  params        enter %.3f (%s), exit %.3f, min %d revisit(s), end after %d low revisit(s)"
                   % (p.enter or 0.0, result.threshold_source, p.exit or 0.0, p.min_revisits, p.end_revisits),
                   err=True)
        for s in result.sites:
            click.echo("  %-14s %s → %s  peak %.2f, %d supporting date(s), %d unknown, %.0f m²" % (
                s.site_id, s.start_date, s.end_date or "ongoing", s.peak_score, s.supporting_dates,
                s.unknown_dates, s.area_m2), err=True)
        if export is not None:
            click.echo("  SMART         %s (+ %d site model(s))" % (export.region_model, len(export.site_models)),
                       err=True)
