"""``groundbreak plan``."""

from __future__ import annotations

import json

import click

from ..estimate import estimate
from .common import input_options, open_model, mask_rules_from, load_inputs, make_reporter
from .summary import print_plan_summary


@click.command("plan")
@input_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object on stdout.")
@click.pass_context
def command(ctx, aois, scenes, model_path, min_valid, threads, price_per_hour, aoi_id_field, band_order, date,
            grid_epsg, allow_resample, events, as_json, **mask_options):
    """What a run would do and cost, without running the model.

    Reads only the AOIs, scene headers and cheap decimated masks.

    \b
    $ groundbreak plan --aoi site.gpkg --scenes 'scenes/*.tif'
    $ groundbreak plan --aoi site.gpkg --scenes catalog.json --json --price-per-hour 0.25
    """
    reporter = make_reporter(events, "plan")
    ctx.obj["reporter"] = reporter
    model = open_model(model_path, reporter)
    plan = load_inputs(aois=aois, scenes=scenes, model=model, aoi_id_field=aoi_id_field,
                              band_order=band_order, date=date, grid_epsg=grid_epsg, reporter=reporter,
                              mask_rules=mask_rules_from(mask_options), allow_resample=allow_resample)
    reporter.stage("screen", "estimating drops from decimated masks")
    est = estimate(plan, model, min_valid=min_valid, threads=threads, price_per_hour=price_per_hour)
    stats = est.stats()
    stats["model_id"] = model.model_id
    stats["model_demo"] = model.demo
    reporter.result({}, stats, est.cost.to_dict())
    reporter.done("ok", 0)
    if as_json:
        doc = dict(stats)
        doc["cost"] = est.cost.to_dict()
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    elif not ctx.obj.get("quiet"):
        print_plan_summary(est)
