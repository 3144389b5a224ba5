"""``groundbreak evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import UsageError


@click.command("evaluate")
@click.option("--model", "model_path", default=None, metavar="DIR",
              help="Model package folder (default: the bundled demo model).")
@click.option("--labels", "labels", multiple=True, metavar="FILE",
              help="Label polygons (GeoPackage/GeoJSON with label and date, a Review export, SMART site models).")
@click.option("--scenes", "scenes", multiple=True, metavar="SCENE",
              help="Labelled scenes: GeoTIFF paths, globs, folders or STAC JSON.")
@click.option("--negatives", "negatives", multiple=True, metavar="SCENE",
              help="Scenes with no construction anywhere: every detection there is a false alarm.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Report folder: report.json, pr_curve.png, score_histogram.png, confusion_matrix.png.")
@click.option("--min-valid", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Skip chips with a smaller clear, valid fraction (as in a run).")
@click.option("--unlabelled", type=click.Choice(["negative", "ignore"]), default="negative", show_default=True,
              help="Chips of labelled scenes that no label touches: background (dense labels) or left out.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256), help="CPU threads.")
@click.option("--runtime", default="auto", show_default=True,
              type=click.Choice(["auto", "eager", "torchscript", "openvino", "openvino-int8", "torch-int8"]),
              help="Inference runtime (auto: as `groundbreak run` chooses).")
@click.option("--band-order", default=None, metavar="NAMES", help="Band order of unlabelled files, e.g. red,green,blue,nir.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def command(ctx, model_path, labels, scenes, negatives, out, min_valid, unlabelled, threads, runtime, band_order,
            as_json):
    """Score a model against labels: precision, recall, F1, PR-AUC, false alarms per km² per date.

    Chips are read and screened exactly as in `groundbreak run`. A chip is construction on a date
    when positive label polygons for that date cover at least 1% of it. Scenes passed with
    --negatives hold no construction: every detection there is a false alarm.

    \b
    $ groundbreak evaluate --labels labels.gpkg --scenes 'scenes/*.tif' --out report/
    $ groundbreak evaluate --model models/mine --negatives 'farmland/*.tif' --out fa-report/
    $ groundbreak evaluate --labels site_models/ --scenes catalog.json --json
    """
    from ..labels import read_labels
    from ..model import load_model_package
    from ..train import load_scenes
    from ..evaluate import evaluate, write_report
    from .train import StderrProgress

    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    quiet = bool(obj.get("quiet"))
    if scenes and not labels:
        raise UsageError("--scenes were given without --labels",
                         hint="pass --labels FILE, or --negatives for scenes without any construction")
    if not scenes and not negatives:
        raise UsageError("nothing to evaluate", hint="pass --scenes with --labels, and/or --negatives")
    order = tuple(v.strip().lower() for v in band_order.split(",")) if band_order else None
    package = load_model_package(model_path)
    label_set = read_labels(list(labels)) if labels else None
    ev = evaluate(package, load_scenes(list(scenes), band_order=order), label_set,
                  negatives=load_scenes(list(negatives), band_order=order), min_valid=min_valid, threads=threads,
                  runtime=runtime, unlabelled=unlabelled, progress=StderrProgress(enabled=not quiet))
    summary = ev.summary()
    if out:
        paths = write_report(ev, Path(out))
        if not quiet:
            click.echo("report: %s" % paths["report"], err=True)
    if as_json:
        from ..evaluate import _finite

        click.echo(json.dumps(_finite(summary), indent=2))
    elif not quiet:
        _print_summary(ev, summary)


def _print_summary(ev, s) -> None:
    fa = s["false_alarms_per_km2_per_date"]
    lines = ["", "Evaluation of %s%s at threshold %g" % (ev.model_id, " (DEMO weights)" if ev.demo else "", ev.threshold),
             "  chips        %d scored (%d construction), %d left out by labels, dropped %s"
             % (s["chips"], s["positives"], s["ignored"], s["dropped"] or "none")]
    if s["positives"]:
        lines.append("  scores       precision %.3f  recall %.3f  F1 %.3f  PR-AUC %.3f  (tp %d, fp %d, fn %d)"
                     % (s["precision"], s["recall"], s["f1"], s["pr_auc"], s["tp"], s["fp"], s["fn"]))
    lines.append("  false alarms %.4f per km² per date (pooled over %.1f km²-dates; worst date %.4f)"
                 % (fa["pooled"], fa["km2_dates"], fa["max"]))
    neg = s.get("negative_scenes")
    if neg:
        lines.append("  negatives    %d false alarm(s) on %d chips of all-negative scenes over %d date(s): "
                     "%.4f per km² per date" % (neg["false_alarms"], neg["chips"], neg["dates"],
                                                neg["false_alarms_per_km2_per_date"]))
    click.echo("\n".join(lines), err=True)
