"""``groundbreak evaluate``: score a model against labelled chips (site-level scoring can join as a mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import click

from . import options
from .train import StderrProgress, chip_options, read_chip_inputs


@click.command("evaluate")
@options.model
@chip_options
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Report folder: report.json, pr_curve.png, score_histogram.png, confusion_matrix.png.")
@options.runtime
@options.force_runtime
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def command(ctx: click.Context, model_path: Optional[str], labels: Tuple[str, ...], scenes: Tuple[str, ...],
            negatives: Tuple[str, ...], unlabelled: str, min_valid: float, band_order: Optional[Tuple[str, ...]],
            allow_resample: bool, cache_dir: Optional[str], threads: int, out: Optional[str], runtime: Optional[str],
            force_runtime: bool, as_json: bool) -> None:
    """Score a model against labels: precision, recall, F1, PR-AUC, false alarms per km² per date.

    Chips are read and screened exactly as in `groundbreak run` (a scene more than twice as coarse
    or fine as the model needs --allow-resample). A chip is construction on a date when positive
    label polygons for that date cover at least 1% of it. Scenes passed with --negatives hold no
    construction: every detection there is a false alarm. Undefined figures (precision with no
    detections, recall without positives) are n/a in text and null in JSON.

    \b
    $ groundbreak evaluate --labels labels.gpkg --scenes 'scenes/*.tif' --out report/
    $ groundbreak evaluate --model models/mine --negatives 'farmland/*.tif' --out fa-report/
    $ groundbreak evaluate --labels site_models/ --scenes catalog.json --runtime eager --json

    --runtime defaults to the package's choice, as in `groundbreak run`; a runtime its recorded
    validation failed needs --force-runtime (to measure a fresh package, evaluate it before publishing).
    """
    quiet = bool(ctx.obj.get("quiet")) if isinstance(ctx.obj, dict) else False
    _chip_evaluation(model_path, labels, scenes, negatives, unlabelled=unlabelled, min_valid=min_valid,
                     band_order=band_order, allow_resample=allow_resample, cache_dir=cache_dir, threads=threads,
                     out=out, runtime=runtime, force_runtime=force_runtime, as_json=as_json, quiet=quiet)


def _chip_evaluation(model_path: Optional[str], labels: Tuple[str, ...], scenes: Tuple[str, ...],
                     negatives: Tuple[str, ...], *, unlabelled: str, min_valid: float,
                     band_order: Optional[Tuple[str, ...]], allow_resample: bool, cache_dir: Optional[str],
                     threads: int, out: Optional[str], runtime: Optional[str], force_runtime: bool, as_json: bool,
                     quiet: bool) -> None:
    """The chip-level mode: labelled chips through the model, a summary, optionally a report folder."""
    from ..evaluate import evaluate, write_report
    from ..metrics import json_safe
    from ..model import load_model_package

    inputs = read_chip_inputs(labels, scenes, negatives, band_order, verb="evaluate")
    package = load_model_package(model_path)
    ev = evaluate(package, inputs.scenes, inputs.labels, negatives=inputs.negatives, min_valid=min_valid,
                  threads=threads, runtime=runtime, force_runtime=force_runtime, unlabelled=unlabelled,
                  allow_resample=allow_resample,
                  cache_dir=Path(cache_dir) if cache_dir else None, progress=StderrProgress(enabled=not quiet))
    summary = ev.summary()
    if out:
        paths = write_report(ev, Path(out))
        if not quiet:
            click.echo("report: %s" % paths["report"], err=True)
    if as_json:
        click.echo(json.dumps(json_safe(summary), indent=2))
    elif not quiet:
        click.echo(_summary_text(ev.model_id, ev.demo, ev.threshold, summary), err=True)


def _summary_text(model_id: str, demo: bool, threshold: float, s: Mapping[str, Any]) -> str:
    from ..metrics import fmt

    fa = s["false_alarms_per_km2_per_date"]
    lines = ["", "Evaluation of %s%s at threshold %g" % (model_id, " (DEMO weights)" if demo else "", threshold),
             "  chips        %d scored (%d construction), %d left out by labels, dropped %s"
             % (s["chips"], s["positives"], s["ignored"], s["dropped"] or "none")]
    if s["positives"]:
        lines.append("  scores       precision %s  recall %s  F1 %s  PR-AUC %s  (tp %d, fp %d, fn %d)"
                     % (fmt(s["precision"]), fmt(s["recall"]), fmt(s["f1"]), fmt(s["pr_auc"]), s["tp"], s["fp"],
                        s["fn"]))
    lines.append("  false alarms %.4f per km² per date (pooled over %.1f km²-dates; worst date %.4f)"
                 % (fa["pooled"], fa["km2_dates"], fa["max"]))
    neg = s.get("negative_scenes")
    if neg:
        lines.append("  negatives    %d false alarm(s) on %d chips of all-negative scenes over %d date(s): "
                     "%.4f per km² per date" % (neg["false_alarms"], neg["chips"], neg["dates"],
                                                neg["false_alarms_per_km2_per_date"]))
    return "\n".join(lines)
