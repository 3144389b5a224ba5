"""``groundbreak model quantize``: a validated int8 OpenVINO IR inside a model package."""

from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from ..errors import UsageError


@click.command("quantize")
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("--labels", "labels", multiple=True, metavar="FILE",
              help="Label polygons of the calibration scenes (as for `groundbreak train`).")
@click.option("--scenes", "scenes", multiple=True, metavar="SCENE",
              help="Labelled scenes whose chips calibrate int8: GeoTIFF paths, globs, folders or STAC JSON.")
@click.option("--negatives", "negatives", multiple=True, metavar="SCENE",
              help="Scenes with no construction anywhere, added to the calibration chips.")
@click.option("--holdout-labels", multiple=True, metavar="FILE", help="Labels of separate held-out scenes.")
@click.option("--holdout-scenes", multiple=True, metavar="SCENE",
              help="Held-out labelled scenes for the validation (default: places held out of --scenes).")
@click.option("--holdout-negatives", multiple=True, metavar="SCENE", help="Held-out scenes with no construction.")
@click.option("--holdout-name", default="", metavar="TEXT",
              help="How the card names the held-out data, e.g. 'demo world 7 (unseen)'.")
@click.option("--holdout-fraction", default=0.3, show_default=True, type=click.FloatRange(0.05, 0.95),
              help="Share of places held out of --scenes when no --holdout-scenes are given.")
@click.option("--holdout-seen/--holdout-unseen", "holdout_seen", default=None,
              help="Say whether the held-out scenes were seen in training (recorded in the package and card).")
@click.option("--calibration-seen/--calibration-unseen", "calibration_seen", default=None,
              help="Say whether the calibration scenes were seen in training.")
@click.option("--calibration-chips", default=300, show_default=True, type=click.IntRange(1, 100000),
              help="Calibration chips (positives first, up to half).")
@click.option("--max-f1-drop", default=0.01, show_default=True, type=click.FloatRange(0, 0.99),
              help="A runtime passes when its held-out F1 is at most this far below eager fp32's.")
@click.option("--min-valid", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Skip chips with a smaller clear, valid fraction (as in a run).")
@click.option("--unlabelled", type=click.Choice(["negative", "ignore"]), default="negative", show_default=True,
              help="Chips of labelled scenes that no label touches: background (dense labels) or left out.")
@click.option("--allow-resample", is_flag=True,
              help="Use scenes outside [0.5x, 2x] of the model's GSD, resampled onto its grid (as train/evaluate).")
@click.option("--band-order", default=None, metavar="NAMES",
              help="Band order of unlabelled files, e.g. red,green,blue,nir.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the calibration draw and the split.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256), help="CPU threads.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Write a copy of the package there (default: the package itself is updated).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
@click.pass_context
def command(ctx: click.Context, model: Optional[str], labels: Sequence[str], scenes: Sequence[str],
            negatives: Sequence[str], holdout_labels: Sequence[str], holdout_scenes: Sequence[str],
            holdout_negatives: Sequence[str], holdout_name: str, holdout_fraction: float, holdout_seen: Optional[bool],
            calibration_seen: Optional[bool], calibration_chips: int, max_f1_drop: float, min_valid: float,
            unlabelled: str, allow_resample: bool, band_order: Optional[str], seed: int, threads: int,
            out: Optional[str], overwrite: bool, as_json: bool) -> None:
    """Calibrate int8 on real chips, validate it on held-out labelled chips, store it in the package.

    Chips are drawn through the same grid and screening as `groundbreak train` and `evaluate`.
    The package gains an OpenVINO IR in fp32 and in int8 (graph and weights only, with their
    sha256), and what each OpenVINO runtime scored against eager fp32 on the held-out chips (chip
    F1, max and mean score change). `--runtime auto` then runs int8 only where it passed (F1 at
    most --max-f1-drop below fp32's), and a run with the IR needs neither torch nor NNCF.

    \b
    $ groundbreak model quantize models/mine --labels labels.gpkg --scenes 'scenes/*.tif'
    $ groundbreak model quantize models/mine --labels a/labels.gpkg --scenes a/scenes \\
        --holdout-labels b/labels.gpkg --holdout-scenes b/scenes --holdout-unseen --out models/mine-int8
    """
    from ..chipset import load_scenes
    from ..labels import read_labels
    from ..model import load_model_package
    from ..quantize import labelled_chips, quantize_package, split_held_out, summary_rows
    from .train import StderrProgress

    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    quiet = bool(obj.get("quiet"))
    if not scenes or not labels:
        raise UsageError("quantize needs labelled calibration chips: pass --labels and --scenes",
                         hint="the same kind of labels and scenes `groundbreak train` takes")
    if holdout_scenes and not holdout_labels:
        raise UsageError("--holdout-scenes were given without --holdout-labels",
                         hint="the held-out chips must be labelled to measure F1")
    order = tuple(v.strip().lower() for v in band_order.split(",")) if band_order else None
    package = load_model_package(model)
    progress = StderrProgress(enabled=not quiet)
    cal_chips, cal_set = labelled_chips(
        package, load_scenes(list(scenes), band_order=order), read_labels(list(labels)),
        negatives=load_scenes(list(negatives), band_order=order), min_valid=min_valid, unlabelled=unlabelled,
        allow_resample=allow_resample, seen_in_training=calibration_seen, progress=progress)  # fmt: skip
    if holdout_scenes:
        held_out, _ = labelled_chips(
            package, load_scenes(list(holdout_scenes), band_order=order), read_labels(list(holdout_labels)),
            negatives=load_scenes(list(holdout_negatives), band_order=order), min_valid=min_valid,
            unlabelled=unlabelled, allow_resample=allow_resample, description=holdout_name,
            seen_in_training=holdout_seen, progress=progress)  # fmt: skip
        calibration = cal_chips
    else:
        calibration, held_out = split_held_out(cal_set, cal_chips, fraction=holdout_fraction, seed=seed)
        if holdout_name:
            held_out = type(held_out)(held_out.x, held_out.y, holdout_name, held_out.seen_in_training, held_out.scenes)
    result = quantize_package(package, calibration, held_out, out=out, max_f1_drop=max_f1_drop,
                              calibration_chips=calibration_chips, threads=threads, seed=seed, overwrite=overwrite,
                              progress=progress)  # fmt: skip
    rows = summary_rows(result)
    if as_json:
        click.echo(json.dumps({"package": str(result.package.root), "rows": rows,
                               "calibration": dict(result.calibration), "held_out": held_out.description,
                               "held_out_chips": len(held_out), "seconds": round(result.seconds, 1)}, indent=2))
        return
    if quiet:
        return
    lines = ["", "Runtimes of %s on %d held-out chips (%d with construction): %s"
             % (result.package.model_id, len(held_out), held_out.positives, held_out.description)]
    for r in rows:
        precision = "n/a" if r["precision"] is None else "%.3f" % r["precision"]
        lines.append("  %-14s F1 %.3f  precision %s  recall %.3f  max |dscore| %.4f  mean %.4f  %s" % (
            r["runtime"], r["f1"], precision, r["recall"], r["max_abs_dscore"], r["mean_abs_dscore"],
            "reference" if r["runtime"] == "eager" else ("passed" if r["passed"] else "FAILED")))
    lines.append("written: %s (%.0f s)" % (result.package.root, result.seconds))
    click.echo("\n".join(lines), err=True)
