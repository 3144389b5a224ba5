"""``groundbreak evaluate``: score a model against labelled chips (site-level scoring can join as a mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import click

from ..errors import UsageError
from . import options
from .train import StderrProgress, chip_options, read_chip_inputs


@click.command("evaluate")
@options.model
@chip_options
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Report folder: report.json, pr_curve.png, score_histogram.png, confusion_matrix.png.")
@options.runtime
@options.force_runtime
@click.option("--sites", "sites_truth", default=None, type=click.Path(exists=True, file_okay=False),
              metavar="TRUTH_DIR", help="Site-level mode: a folder of IARPA SMART site models (and region model) "
                                        "to score --proposals against.")
@click.option("--proposals", default=None, type=click.Path(exists=True), metavar="DIR_OR_GPKG",
              help="Site-level mode: SMART site models written by `groundbreak timeline --smart`, or a run "
                   "GeoPackage with a sites layer.")
@click.option("--region-id", default=None, metavar="CC_R000",
              help="Site-level mode: the region to score (default: the truth folder's region model).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def command(ctx: click.Context, model_path: Optional[str], labels: Tuple[str, ...], scenes: Tuple[str, ...],
            negatives: Tuple[str, ...], unlabelled: str, min_valid: float, band_order: Optional[Tuple[str, ...]],
            allow_resample: bool, cache_dir: Optional[str], threads: int, out: Optional[str], runtime: Optional[str],
            force_runtime: bool, sites_truth: Optional[str], proposals: Optional[str], region_id: Optional[str],
            as_json: bool) -> None:
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
    if sites_truth is not None or proposals is not None:
        if labels or scenes or negatives:
            raise UsageError("--sites/--proposals (site level) cannot be combined with --labels/--scenes/"
                             "--negatives (chip level)", hint="run the two evaluations as two commands")
        if sites_truth is None or proposals is None:
            raise UsageError("site-level scoring needs both --sites TRUTH_DIR and --proposals DIR_OR_GPKG",
                             hint="e.g. groundbreak evaluate --sites smart/ --proposals detections.gpkg")
        _site_evaluation(Path(sites_truth), Path(proposals), out=out, region_id=region_id, as_json=as_json,
                         quiet=quiet)
        return
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


def _site_evaluation(truth: Path, proposals: Path, *, out: Optional[str], region_id: Optional[str], as_json: bool,
                     quiet: bool) -> None:
    """The site-level mode: proposals against SMART truth sites, in the program's manner."""
    from ..metrics import fmt, json_safe
    from ..sitescore import evaluate_sites

    report = evaluate_sites(truth, proposals, Path(out) if out else None, region_id=region_id)
    if as_json:
        click.echo(json.dumps(json_safe(report.to_dict()), indent=2))
        return
    if quiet:
        return
    start, end = report.start_error_days, report.end_error_days
    lines = ["", "Site-level evaluation of %s against %s" % (proposals, truth),
             "  sites        %d matched, %d false, %d missed: precision %s, recall %s, F1 %s"
             % (report.tp, report.fp, report.fn, fmt(report.precision), fmt(report.recall), fmt(report.f1)),
             "  proposals    %d scored, %d dropped as the program's scorer drops them (status not "
             "system_confirmed, no start/end date, or outside the region's window)"
             % (report.counts.get("proposals", 0), report.counts.get("proposals_dropped", 0)),
             "  truth        %d positive, %d negative (a match is a false positive), %d set aside (ignore, "
             "under 9,000 m², outside the window)" % (report.counts.get("truth_positive", 0),
                                                      report.counts.get("truth_negative", 0),
                                                      report.counts.get("truth_ignore", 0)),
             "  start dates  error in days: mean |e| %s, median %s" % (start.get("mean_abs"), start.get("median")),
             "  end dates    error in days: mean |e| %s, median %s" % (end.get("mean_abs"), end.get("median"))]
    for m in report.matches:
        lines.append("  match        %s <- %s (%s, start %+d d, end %+d d)" % (
            m.truth_id, ", ".join(m.proposal_ids), m.mode, m.start_error_days, m.end_error_days))
    if report.missed:
        lines.append("  missed       %s" % ", ".join(report.missed))
    if out:
        lines.append("  report       %s" % (Path(out) / "report.json"))
    click.echo("\n".join(lines), err=True)

