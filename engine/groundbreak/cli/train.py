"""``groundbreak train``."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from ..errors import UsageError



class StderrProgress:
    """A one-line progress bar on a terminal's stderr; one line per epoch otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int, info: dict) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if stage == "epoch":
            text = "epoch %d/%d  " % (done, total) + "  ".join(
                "%s %.4g" % (k, v) for k, v in info.items() if k not in ("epoch",) and isinstance(v, float))
            click.echo(("\r" if self.tty else "") + text.ljust(100), err=True)
            return
        if not self.tty and stage == "train":
            return
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        extra = ""
        if stage == "train":
            extra = " epoch %s/%s loss %.4f" % (info.get("epoch"), info.get("epochs"), info.get("loss", float("nan")))
        elif info.get("scene"):
            extra = " " + str(info["scene"])
        line = "%-8s [%s] %d/%d%s  %.0fs" % (stage, bar, done, total, extra, now - self.t0)
        if self.tty:
            click.echo("\r" + line[:110].ljust(110), err=True, nl=False)
            if done >= total:
                click.echo("", err=True)
        elif stage == "extract" and done >= total:
            click.echo(line, err=True)


@click.command("train")
@click.option("--labels", "labels", multiple=True, metavar="FILE",
              help="Label polygons: GeoPackage/GeoJSON with label and date fields, a Review export, or IARPA "
                   "SMART site models (files, folders or globs). Repeat or list several.")
@click.option("--scenes", "scenes", multiple=True, metavar="SCENE",
              help="Labelled scenes: GeoTIFF paths, globs, folders or STAC JSON. Repeat or list several.")
@click.option("--negatives", "negatives", multiple=True, metavar="SCENE",
              help="Scenes where everything is background (no construction anywhere): hard negatives.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model package folder to write.")
@click.option("--init", "init", default=None, metavar="MODEL", help="Fine-tune from this model package.")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(1), help="Maximum epochs.")
@click.option("--steps-per-epoch", default=0, show_default=True, type=click.IntRange(0),
              help="Batches per epoch (0: one pass over the training chips).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(2, 512))
@click.option("--lr", default=None, type=click.FloatRange(0, min_open=True),
              help="Peak learning rate [default: 2e-3, or 5e-4 with --init].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for initialisation, split and sampling.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of places (sites or 2 km grid blocks) held out for validation.")
@click.option("--patience", default=4, show_default=True, type=click.IntRange(1),
              help="Stop after this many epochs without a better validation loss.")
@click.option("--architecture", default="resnet18-w8", show_default=True,
              help="Network architecture (ignored with --init, which keeps the package's).")
@click.option("--batchnorm", type=click.Choice(["train", "frozen"]), default=None,
              help="Learn BatchNorm statistics, or keep them (default: frozen with --init, else train).")
@click.option("--unlabelled", type=click.Choice(["negative", "ignore"]), default="negative", show_default=True,
              help="Chips of labelled scenes that no label touches: background (dense labels) or left out.")
@click.option("--min-valid", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Skip chips with a smaller clear, valid fraction (as in a run).")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256), help="CPU threads.")
@click.option("--model-id", default="groundbreak-model", show_default=True)
@click.option("--version", "version", default="0.1.0", show_default=True)
@click.option("--demo", is_flag=True, help="Mark the weights as DEMO (not validated on real construction imagery).")
@click.option("--band-order", default=None, metavar="NAMES", help="Band order of unlabelled files, e.g. red,green,blue,nir.")
@click.option("--checkpoint-dir", default=None, type=click.Path(file_okay=False),
              help="Where checkpoints go (default: OUT.checkpoints); a re-run resumes from the last one.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Chip cache (default: ~/.cache/groundbreak/train).")
@click.option("--note", default="", help="Free text added to the model card.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.pass_context
def command(ctx, labels, scenes, negatives, out, init, epochs, steps_per_epoch, batch_size, lr, seed, val_fraction,
            patience, architecture, batchnorm, unlabelled, min_valid, threads, model_id, version, demo, band_order,
            checkpoint_dir, cache_dir, note, overwrite):
    """Train (or fine-tune) a model package from labelled scenes, on CPU.

    Chips come through the same grid, warped views and screening as `groundbreak run`. The
    validation split holds out whole places; training stops early when validation loss stalls,
    checkpoints every epoch (re-running the same command resumes) and writes a model package
    whose card records this command, the data and the validation metrics.

    \b
    $ groundbreak train --labels labels.gpkg --scenes 'scenes/*.tif' --out models/mine
    $ groundbreak train --labels site_models/ --scenes catalog.json --negatives 'farmland/*.tif' \\
          --out models/mine --epochs 20 --seed 1
    $ groundbreak train --init models/mine --labels review_export.gpkg --scenes 'new/*.tif' \\
          --unlabelled ignore --out models/mine-ft
    """
    from ..labels import read_labels
    from ..model import load_model_package
    from ..modelpack import DEFAULT_DTYPE_SCALING, DEFAULT_MEAN, DEFAULT_STD
    from ..train import TrainConfig, build_chip_set, default_cache_dir, load_scenes, train

    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    quiet = bool(obj.get("quiet"))
    if scenes and not labels:
        raise UsageError("--scenes were given without --labels", hint="pass --labels FILE, or use --negatives "
                         "for scenes that hold no construction at all")
    if not scenes and not negatives:
        raise UsageError("no scenes to train on", hint="pass --scenes (with --labels) and/or --negatives")
    order = tuple(v.strip().lower() for v in band_order.split(",")) if band_order else None
    label_set = read_labels(list(labels)) if labels else None
    scene_list = load_scenes(list(scenes), band_order=order)
    negative_list = load_scenes(list(negatives), band_order=order)
    if init:
        base = load_model_package(init)
        mean, std, scaling, bands = base.mean, base.std, base.scaling, base.bands
    else:
        mean, std, scaling, bands = DEFAULT_MEAN, DEFAULT_STD, DEFAULT_DTYPE_SCALING, ("red", "green", "blue", "nir")
    progress = StderrProgress(enabled=not quiet)
    data = build_chip_set(scene_list, label_set, negatives=negative_list, mean=mean, std=std, scaling=scaling,
                          bands=bands, min_valid=min_valid, unlabelled=unlabelled,
                          cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(), progress=progress)
    if not quiet:
        s = data.summary()
        click.echo("data: %d chips (%d positive) from %d scene(s), %d places; dropped %s; left out %d"
                   % (s["chips"], s["positives"], s["scenes"], s["places"], s["dropped"] or "none", s["ignored"]),
                   err=True)
    config = TrainConfig(
        architecture=architecture, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        lr=lr if lr is not None else (5e-4 if init else 2e-3), seed=seed, val_fraction=val_fraction,
        patience=patience, batchnorm=batchnorm or ("frozen" if init else "train"), threads=threads,
    )
    command_line = "groundbreak train " + " ".join(shlex.quote(a) for a in _argv_after("train"))
    data_text = ("Labels: %s. Scenes: %s. All-negative scenes: %s. %s" % (
        ", ".join(labels) or "none", ", ".join(s.scene_id for s in scene_list) or "none",
        ", ".join(s.scene_id for s in negative_list) or "none",
        "%d chips (%d positive) after screening at --min-valid %g." % (len(data), int(data.y.sum()), min_valid)))
    result = train(config, data, out, init=init, checkpoint_dir=checkpoint_dir, model_id=model_id, version=version,
                   demo=demo, command=command_line, training_data=data_text, card_text=note, overwrite=overwrite,
                   progress=progress)
    if not quiet:
        vm = result.val_metrics
        click.echo("wrote %s (best epoch %d, threshold %.2f%s) in %.0f s" % (
            result.package.root, result.best_epoch, result.threshold,
            "".join(", %s %.3f" % (k, v) for k, v in vm.items() if k in ("val_pr_auc", "val_f1")), result.seconds),
            err=True)


def _argv_after(name: str) -> list:
    args = sys.argv[1:]
    return args[args.index(name) + 1:] if name in args else args
