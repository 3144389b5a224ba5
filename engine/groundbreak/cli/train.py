"""``groundbreak train``, and the options and input loading it shares with ``groundbreak evaluate``."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import click

from ..chipset import Unlabelled
from ..errors import UsageError
from . import options

if TYPE_CHECKING:
    from ..labels import LabelSet
    from ..scene import Scene


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


class StderrProgress:
    """A one-line progress bar on a terminal's stderr; one line per epoch otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int, info: Dict[str, object]) -> None:
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
            extra = " epoch %s/%s loss %.4f" % (info.get("epoch"), info.get("epochs"), _float(info.get("loss")))
        elif info.get("scene"):
            extra = " " + str(info["scene"])
        line = "%-8s [%s] %d/%d%s  %.0fs" % (stage, bar, done, total, extra, now - self.t0)
        if self.tty:
            click.echo("\r" + line[:110].ljust(110), err=True, nl=False)
            if done >= total:
                click.echo("", err=True)
        elif stage == "extract" and done >= total:
            click.echo(line, err=True)


def chip_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The inputs of labelled chips, shared by ``train`` and ``evaluate``: labels, scenes, negatives,
    band order, the screening and resolution rules, the chip cache (the run's options from ``options``)."""
    return options.apply(func, [
        click.option("--labels", "labels", multiple=True, metavar="FILE",
                     help="Label polygons: GeoPackage/GeoJSON with label and date fields, a Review export, or "
                          "IARPA SMART site models (files, folders or globs). Repeat or list several."),
        click.option("--scenes", "scenes", multiple=True, metavar="SCENE",
                     help="Labelled scenes: GeoTIFF paths, globs, folders or STAC JSON. Repeat or list several."),
        click.option("--negatives", "negatives", multiple=True, metavar="SCENE",
                     help="Scenes with no construction anywhere (hard negatives): every detection there is a "
                          "false alarm."),
        click.option("--unlabelled", type=click.Choice([u.value for u in Unlabelled]), default="negative",
                     show_default=True,
                     help="Chips of labelled scenes that no label touches: background (dense labels) or left out."),
        options.min_valid,
        options.band_order,
        options.allow_resample,
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help="Chip cache (default: the engine's cache folder, train/; see GROUNDBREAK_CACHE)."),
        options.threads,
    ])


@dataclass(frozen=True)
class ChipInputs:
    """Labels and scenes as read from the command line (scenes found as `groundbreak run` finds them)."""

    labels: Optional["LabelSet"]
    scenes: Tuple["Scene", ...]
    negatives: Tuple["Scene", ...]


def read_chip_inputs(labels: Sequence[str], scenes: Sequence[str], negatives: Sequence[str],
                     band_order: Optional[Sequence[str]], *, verb: str) -> ChipInputs:
    """Read --labels, --scenes and --negatives; a usage error when there is nothing to ``verb`` on."""
    from ..chipset import load_scenes
    from ..labels import read_labels

    if scenes and not labels:
        raise UsageError("--scenes were given without --labels", hint="pass --labels FILE, or use --negatives "
                         "for scenes that hold no construction at all")
    if not scenes and not negatives:
        raise UsageError("no scenes to %s" % verb, hint="pass --scenes (with --labels) and/or --negatives")
    return ChipInputs(read_labels(list(labels)) if labels else None,
                      tuple(load_scenes(list(scenes), band_order=band_order)),
                      tuple(load_scenes(list(negatives), band_order=band_order)))


@click.command("train")
@chip_options
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
@click.option("--model-id", default="groundbreak-model", show_default=True)
@click.option("--version", "version", default="0.1.0", show_default=True)
@click.option("--demo", is_flag=True, help="Mark the weights as DEMO (not validated on real construction imagery).")
@click.option("--checkpoint-dir", default=None, type=click.Path(file_okay=False),
              help="Where checkpoints go (default: OUT.checkpoints); a re-run resumes from the last one.")
@click.option("--note", default="", help="Free text added to the model card.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.pass_context
def command(ctx: click.Context, labels: Tuple[str, ...], scenes: Tuple[str, ...], negatives: Tuple[str, ...],
            unlabelled: str, min_valid: float, band_order: Optional[Tuple[str, ...]], allow_resample: bool,
            cache_dir: Optional[str], threads: int, out: str, init: Optional[str], epochs: int,
            steps_per_epoch: int, batch_size: int, lr: Optional[float], seed: int, val_fraction: float,
            patience: int, architecture: str, batchnorm: Optional[str], model_id: str, version: str, demo: bool,
            checkpoint_dir: Optional[str], note: str, overwrite: bool) -> None:
    """Train (or fine-tune) a model package from labelled scenes, on CPU.

    Chips come through the same suitability rule, grid, warped views and screening as
    `groundbreak run` (a scene more than twice as coarse or fine as the model needs
    --allow-resample). The validation split holds out whole places; training stops early when
    validation loss stalls, checkpoints every epoch (re-running the same command resumes) and
    writes a model package whose card records this command, the data and the validation metrics.

    \b
    $ groundbreak train --labels labels.gpkg --scenes 'scenes/*.tif' --out models/mine
    $ groundbreak train --labels site_models/ --scenes catalog.json --negatives 'farmland/*.tif' \\
          --out models/mine --epochs 20 --seed 1
    $ groundbreak train --init models/mine --labels review_export.gpkg --scenes 'new/*.tif' \\
          --unlabelled ignore --out models/mine-ft
    """
    from ..chipset import ChipSpec, build_chip_set
    from ..model import load_model_package
    from ..modelpack import DEFAULT_DTYPE_SCALING, DEFAULT_MEAN, DEFAULT_STD
    from ..train import TrainConfig, train

    quiet = bool(ctx.obj.get("quiet")) if isinstance(ctx.obj, dict) else False
    inputs = read_chip_inputs(labels, scenes, negatives, band_order, verb="train on")
    if init:
        base = load_model_package(init)
        mean, std, scaling, spec = base.mean, base.std, base.scaling, ChipSpec.of(base)
    else:
        mean, std, scaling, spec = DEFAULT_MEAN, DEFAULT_STD, DEFAULT_DTYPE_SCALING, ChipSpec()
    progress = StderrProgress(enabled=not quiet)
    data = build_chip_set(inputs.scenes, inputs.labels, negatives=inputs.negatives, mean=mean, std=std,
                          scaling=scaling, spec=spec, min_valid=min_valid, unlabelled=unlabelled,
                          allow_resample=allow_resample, cache_dir=Path(cache_dir) if cache_dir else None,
                          progress=progress)
    if not quiet:
        click.echo("data: %d chips (%d positive) from %d scene(s), %d places; dropped %s; left out %d"
                   % (len(data), int(data.y.sum()), len(set(data.scene_ids)), len(set(data.groups)),
                      dict(data.dropped) or "none", data.ignored), err=True)
    config = TrainConfig(
        architecture=architecture, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        lr=lr if lr is not None else (5e-4 if init else 2e-3), seed=seed, val_fraction=val_fraction,
        patience=patience, batchnorm=batchnorm or ("frozen" if init else "train"), threads=threads,
    )
    command_line = "groundbreak train " + " ".join(shlex.quote(a) for a in _argv_after("train"))
    data_text = "Labels: %s. Scenes: %s. All-negative scenes: %s. %s" % (
        ", ".join(labels) or "none", ", ".join(s.scene_id for s in inputs.scenes) or "none",
        ", ".join(s.scene_id for s in inputs.negatives) or "none",
        "%d chips (%d positive) after screening at --min-valid %g." % (len(data), int(data.y.sum()), min_valid))
    result = train(config, data, out, init=init, checkpoint_dir=checkpoint_dir, model_id=model_id, version=version,
                   demo=demo, command=command_line, training_data=data_text, card_text=note, overwrite=overwrite,
                   progress=progress)
    if not quiet:
        vm = result.val_metrics
        click.echo("wrote %s (best epoch %d, threshold %.2f%s) in %.0f s" % (
            result.package.root, result.best_epoch, result.threshold,
            "".join(", %s %.3f" % (k, v) for k, v in vm.items() if k in ("val_pr_auc", "val_f1")), result.seconds),
            err=True)


def _argv_after(name: str) -> List[str]:
    args = sys.argv[1:]
    return args[args.index(name) + 1:] if name in args else args
