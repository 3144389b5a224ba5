"""``groundbreak plan``."""

from __future__ import annotations

import json
from typing import Any

import click

from ..estimate import estimate
from . import options
from .common import make_reporter, open_model, plan_from
from .summary import print_plan_summary


@click.command("plan")
@options.input_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object on stdout.")
@click.pass_context
def command(ctx: click.Context, **params: Any) -> None:
    """What a run would do and cost, without running the model.

    Reads only the AOIs, scene headers and cheap decimated masks.

    \b
    $ groundbreak plan --aoi site.gpkg --scenes 'scenes/*.tif'
    $ groundbreak plan --aoi site.gpkg --scenes catalog.json --json --price-per-hour 0.25
    """
    reporter = make_reporter(params.pop("events"), "plan")
    ctx.obj["reporter"] = reporter
    as_json = params.pop("as_json")
    model = open_model(params.pop("model_path"), reporter)
    plan = plan_from(params, model, reporter)
    reporter.stage("screen", "estimating drops from decimated masks")
    est = estimate(plan, model, min_valid=params["min_valid"], threads=params["threads"],
                   price_per_hour=params["price_per_hour"])
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
