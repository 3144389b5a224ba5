"""Options shared by the sub-commands, each defined once (in the manner of ``rasterio.rio.options``).

A sub-command decorates itself with the options it takes; the names, defaults, choices and help
texts live here only, so ``run``, ``plan``, ``demo``, ``train`` and ``evaluate`` cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar

import click

from ..cost import DEFAULT_PRICE_PER_HOUR
from ..errors import UsageError
from ..masks import DEFAULT_MIN_VALID, MaskRules
from ..names import RUNTIME_CHOICES
from ..scene import parse_band_order

F = TypeVar("F", bound=Callable[..., Any])


def _band_order(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[Tuple[str, ...]]:
    if not value:
        return None
    try:
        return parse_band_order(value)  # the one parser, shared with the library
    except UsageError as exc:
        raise click.BadParameter("%s (%s)" % (exc.message, exc.hint)) from None


def _int_list(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give integers separated by commas, e.g. 8,9,10") from None


aois = click.option("--aoi", "aois", multiple=True, required=True, metavar="FILE",
                    help="AOI polygons: any OGR vector file (GeoPackage, GeoJSON, Shapefile), any CRS. "
                         "Repeat for more files; 'file.gpkg|layername=x' picks a layer.")
scenes = click.option("--scenes", "scenes", multiple=True, required=True, metavar="SCENE",
                      help="GeoTIFF/COG paths or globs (quote them), folders, or STAC Item/ItemCollection/"
                           "Catalog JSON. Repeat or list several after one --scenes.")
model = click.option("--model", "model_path", default=None, metavar="DIR",
                     help="Model package folder (default: the bundled demo model).")
min_valid = click.option("--min-valid", default=DEFAULT_MIN_VALID, show_default=True, type=click.FloatRange(0, 1),
                         help="Drop chips with a smaller clear, valid fraction before inference.")
threads = click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256),
                       help="CPU threads for inference.")
price = click.option("--price-per-hour", default=DEFAULT_PRICE_PER_HOUR, show_default=True, type=click.FloatRange(0),
                     help="USD per node-hour for the cost figures (an example price by default).")
aoi_id_field = click.option("--aoi-id-field", default=None, metavar="FIELD",
                            help="AOI attribute holding its id (default: aoi_id, id, name, or the feature id).")
band_order = click.option("--band-order", default=None, callback=_band_order, metavar="NAMES",
                          help="The scenes' band order when their files don't label bands, e.g. red,green,blue,nir "
                               "('-' for a band to ignore).")
date = click.option("--date", "date", default=None, metavar="YYYY-MM-DD",
                    help="Acquisition date for a single scene whose file carries none.")
grid_epsg = click.option("--grid-epsg", default=None, type=int, metavar="EPSG",
                         help="Chip grid CRS (default: the UTM zone of the AOIs' centre).")
allow_resample = click.option("--allow-resample", is_flag=True,
                              help="Use scenes whose resolution is more than twice as coarse or fine as the model's "
                                   "(resampled onto its chip grid; scores on such imagery are not validated).")
events = click.option("--events", type=click.Choice(["jsonl"]), default=None,
                      help="Stream typed JSON-lines events on stdout (for QGIS and other clients).")
batch_size = click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024),
                          help="Chips per forward pass of the model.")
runtime = click.option("--runtime", default=None, type=click.Choice(list(RUNTIME_CHOICES)),
                       help="Inference runtime (default: the model package's choice, normally auto = the fastest "
                            "runtime the package validates; a runtime its validation failed needs --force-runtime).")
force_runtime = click.option("--force-runtime", is_flag=True,
                             help="Run a runtime the model package records as failing its validation.")
streams = click.option("--streams", default=None, type=click.IntRange(1, 256),
                       help="Forward passes run at once (OpenVINO streams sharing --threads; default: one per "
                            "thread, which beat one multi-thread pass by ~12% on a 2-core CPU).")
readers = click.option("--readers", default=2, show_default=True, type=click.IntRange(1, 64),
                       help="Reader threads for the I/O stage (decompression runs in parallel).")

_mask_options = (
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
)
_MASK_KEYS = ("mask_pattern", "mask_kind", "mask_cloud_values", "mask_shadow_values", "mask_nodata_values")


def apply(func: F, options: Sequence[Callable[[F], F]]) -> F:
    for opt in reversed(options):
        func = opt(func)
    return func


def mask_options(func: F) -> F:
    return apply(func, _mask_options)


def mask_rules_from(params: dict) -> Optional[MaskRules]:
    """MaskRules from the --mask-* options (None when none was given); removes them from ``params``."""
    values = {k: params.pop(k, None) for k in _MASK_KEYS}
    if all(v is None for v in values.values()):
        return None
    return MaskRules(pattern=values["mask_pattern"], kind=values["mask_kind"],
                     cloud_values=values["mask_cloud_values"], shadow_values=values["mask_shadow_values"],
                     nodata_values=values["mask_nodata_values"])


def input_options(func: F) -> F:
    """What ``plan`` and ``run`` both read: AOIs, scenes, the model and how to read them."""
    return apply(func, [aois, scenes, model, min_valid, threads, price, aoi_id_field, band_order, date, grid_epsg,
                        allow_resample, *_mask_options, events])
