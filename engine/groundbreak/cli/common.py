"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import os
import signal
import stat
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import click

from ..cost import DEFAULT_PRICE_PER_HOUR
from ..model import ModelPackage, load_model_package
from ..plan import Plan, plan_inputs
from ..reporter import CancelToken, Reporter, watch_stdin


def _band_order(_ctx, _param, value: Optional[str]) -> Optional[Tuple[str, ...]]:
    if not value:
        return None
    names = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give band names separated by commas, e.g. red,green,blue,nir")
    return names


def _int_list(_ctx, _param, value: Optional[str]) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give integers separated by commas, e.g. 8,9,10") from None


def mask_rules_from(params: dict):
    """MaskRules from the --mask-* options (None when none was given)."""
    from ..masks import MaskRules

    keys = ("mask_pattern", "mask_kind", "mask_cloud_values", "mask_shadow_values", "mask_nodata_values")
    if all(params.get(k) is None for k in keys):
        return None
    return MaskRules(pattern=params.get("mask_pattern"), kind=params.get("mask_kind"),
                     cloud_values=params.get("mask_cloud_values"), shadow_values=params.get("mask_shadow_values"),
                     nodata_values=params.get("mask_nodata_values"))


def input_options(func: Callable) -> Callable:
    """--aoi/--scenes/--model and friends, shared by plan and run."""
    opts = [
        click.option("--aoi", "aois", multiple=True, required=True, metavar="FILE",
                     help="AOI polygons: any OGR vector file (GeoPackage, GeoJSON, Shapefile), any CRS. "
                          "Repeat for more files; 'file.gpkg|layername=x' picks a layer."),
        click.option("--scenes", "scenes", multiple=True, required=True, metavar="SCENE",
                     help="GeoTIFF/COG paths or globs (quote them), folders, or STAC Item/ItemCollection/"
                          "Catalog JSON. Repeat or list several after one --scenes."),
        click.option("--model", "model_path", default=None, metavar="DIR",
                     help="Model package folder (default: the bundled demo model)."),
        click.option("--min-valid", default=0.5, show_default=True, type=click.FloatRange(0, 1),
                     help="Drop chips with a smaller clear, valid fraction before inference."),
        click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256),
                     help="CPU threads for inference."),
        click.option("--price-per-hour", default=DEFAULT_PRICE_PER_HOUR, show_default=True,
                     type=click.FloatRange(0), help="USD per node-hour for the cost figures (an example price "
                     "by default)."),
        click.option("--aoi-id-field", default=None, metavar="FIELD",
                     help="AOI attribute holding its id (default: aoi_id, id, name, or the feature id)."),
        click.option("--band-order", default=None, callback=_band_order, metavar="NAMES",
                     help="The scenes' band order when their files don't label bands, e.g. red,green,blue,nir."),
        click.option("--date", "date", default=None, metavar="YYYY-MM-DD",
                     help="Acquisition date for a single scene whose file carries none."),
        click.option("--grid-epsg", default=None, type=int, metavar="EPSG",
                     help="Chip grid CRS (default: the UTM zone of the AOIs' centre)."),
        click.option("--allow-resample", is_flag=True,
                     help="Use scenes whose resolution is more than twice as coarse or fine as the model's "
                          "(resampled onto its chip grid; scores on such imagery are not validated)."),
        click.option("--mask-pattern", default=None, metavar="PATTERN",
                     help="Sidecar mask file name next to each scene, {stem} = scene file stem, e.g. "
                          "'{stem}.cloud.tif' (default: {stem}_udm2.tif, {stem}_SCL.tif, {stem}_mask.tif)."),
        click.option("--mask-kind", type=click.Choice(["classes", "udm2"]), default=None,
                     help="How to read a --mask-pattern sidecar: one band of class values, or Planet UDM2."),
        click.option("--mask-cloud-values", default=None, callback=_int_list, metavar="V,V",
                     help="Class values that mean cloud (e.g. 8,9,10 for Sentinel-2 SCL)."),
        click.option("--mask-shadow-values", default=None, callback=_int_list, metavar="V,V",
                     help="Class values that mean cloud shadow."),
        click.option("--mask-nodata-values", default=None, callback=_int_list, metavar="V,V",
                     help="Class values that mean no data."),
        click.option("--events", type=click.Choice(["jsonl"]), default=None,
                     help="Stream typed JSON-lines events on stdout (for QGIS and other clients)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


VARIADIC = ("--scenes", "--aoi", "--labels", "--negatives")


def expand_variadic(args: Sequence[str]) -> List[str]:
    """Let ``--scenes a.tif b.tif`` mean ``--scenes a.tif --scenes b.tif`` (shells expand globs
    into many words; click options take one value each)."""
    out: List[str] = []
    current: Optional[str] = None
    for arg in args:
        if arg in VARIADIC:
            current = arg
            out.append(arg)
            continue
        if current is not None and not arg.startswith("-") and out and out[-1] != current:
            out.extend([current, arg])
            continue
        if arg.startswith("-"):
            current = None
        out.append(arg)
    return out


def open_model(model_path: Optional[str], reporter: Reporter) -> ModelPackage:
    """Load (and hash-check) the model package once per command, and greet the client with it.

    A package that fails to load still gets a ``hello`` (with no model) before the error event."""
    try:
        model = load_model_package(model_path)
    except Exception:
        reporter.hello(None)
        raise
    reporter.hello(model.provenance())
    return model


def load_inputs(*, aois: Sequence[str], scenes: Sequence[str], model: ModelPackage, aoi_id_field: Optional[str],
                band_order, date: Optional[str], grid_epsg: Optional[int], reporter: Reporter,
                mask_rules=None, allow_resample: bool = False) -> Plan:
    return plan_inputs(list(aois), list(scenes), model, aoi_id_field=aoi_id_field, band_order=band_order,
                       date=date, grid_epsg=grid_epsg, mask_rules=mask_rules, allow_resample=allow_resample,
                       reporter=reporter)


def make_reporter(events: Optional[str], command: str) -> Reporter:
    if events != "jsonl":
        return Reporter(None, command=command)
    return Reporter(_protocol_stream(), command=command)


def _protocol_stream():
    """Reserve stdout for protocol lines only.

    The real stdout file descriptor is duplicated for the reporter, then fd 1 (and ``sys.stdout``)
    are pointed at stderr, so nothing else — a library's progress bar, a C library's log line —
    can ever write into the protocol stream.
    """
    sys.stdout.flush()
    try:
        if sys.stdout.fileno() != 1:
            return sys.stdout
        fd = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # captured stdout (tests, embedding): leave it
        return sys.stdout
    stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stdout = sys.stderr
    return stream


def install_cancel(events: Optional[str]) -> CancelToken:
    """Cancel on SIGTERM/SIGINT, and (for clients) on a cancel line or EOF on a piped stdin."""
    token = CancelToken()

    def _handler(signum, _frame):
        token.cancel("signal %d" % signum)

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    if events == "jsonl" and _stdin_is_pipe():
        watch_stdin(token)
    return token


def _stdin_is_pipe() -> bool:
    # /dev/null or a terminal must not cancel a run the moment it starts; only a client's pipe does.
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
