"""Writing model packages: weights (safetensors), ``model.json`` (STAC MLM) and the model card.

``write_model_package`` is what training code calls to publish a network; ``make_random_package``
builds a package with fixed random weights (BatchNorm statistics calibrated on synthetic chips so
scores spread over (0, 1) rather than saturating) for tests and benchmarks. Everything written here
is read back by ``groundbreak.model.load_model_package``, which is the format's single validator.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors.torch import save_file

import groundbreak
from groundbreak.artifacts import readable
from groundbreak.errors import OutputError, UsageError
from groundbreak.model import (
    CARD_FILE,
    MLM_SCHEMA,
    MODEL_JSON,
    WEIGHTS_FILE,
    ModelPackage,
    file_sha256,
    load_model_package,
)
from groundbreak.network import (
    CELL_STRIDE,
    BasicBlock,
    ChipNet,
    build_network,
    calibrate_batchnorm,
    parameter_count,
    state_dict_for_save,
)

log = logging.getLogger(__name__)

DEFAULT_BANDS = ("red", "green", "blue", "nir")
#: Stored scene values -> reflectance-like [0, 1]: 8-bit visual products and 16-bit surface
#: reflectance scaled by 10,000 (Planet, Sentinel-2 L2A convention).
DEFAULT_DTYPE_SCALING: Mapping[str, Tuple[float, float]] = {
    "uint8": (0.0, 1.0 / 255.0),
    "uint16": (0.0, 1.0 / 10000.0),
    "float32": (0.0, 1.0),
}
#: Surface-reflectance statistics typical of mixed urban/agricultural land (R, G, B, NIR).
DEFAULT_MEAN = (0.08, 0.09, 0.07, 0.25)
DEFAULT_STD = (0.05, 0.045, 0.045, 0.09)
CLASSES = ("background", "construction")
DEMO_PROVENANCE = "Demo weights: every output made with this model is marked demo=true in its provenance."

DEFAULT_INTENDED_USE = (
    "Screening many dates of 4-band (R, G, B, NIR) imagery at about 2 m/px for heavy construction "
    "activity (earthworks, cleared or graded land, foundations), to direct an analyst's attention. "
    "Every detection is a candidate for human review, not a finding."
)
DEFAULT_LIMITS = (
    "Trained for the declared ground sample distance range and bands only. Clouds, haze, shadows, "
    "seasonal bare soil, quarries, mines and agricultural tillage can look like earthworks. Scores "
    "are not calibrated probabilities across regions or sensors."
)


def write_model_package(
    out_dir: "str | Path",
    model: ChipNet,
    *,
    model_id: str,
    version: str,
    demo: bool,
    threshold: float,
    card_text: str = "",
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    bands: Sequence[str] = DEFAULT_BANDS,
    chip_size: int = 256,
    gsd: float = 2.0,
    gsd_range: Tuple[float, float] = (1.5, 3.0),
    dtype_scaling: Mapping[str, Tuple[float, float]] = DEFAULT_DTYPE_SCALING,
    training_data: str = "",
    metrics: Optional[Mapping[str, float]] = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limits: str = DEFAULT_LIMITS,
    runtime: str = "auto",
    overwrite: bool = False,
) -> ModelPackage:
    """Write ``model`` as a package in ``out_dir`` and return it as loaded back (validated).

    ``card_text`` is free text added to the model card under "Notes". Files are written under
    temporary names and renamed, ``model.json`` last, so a reader never sees a half package.
    """
    out = Path(out_dir)
    if len(mean) != len(bands) or len(std) != len(bands):
        raise UsageError(f"mean/std need one value per band ({len(bands)}), got {len(mean)}/{len(std)}")
    if chip_size % 32:
        raise UsageError(f"chip_size must be a multiple of 32 (the network's stride), got {chip_size}")
    if model.in_channels != len(bands):
        raise UsageError(f"the network takes {model.in_channels} bands but {len(bands)} were named")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            f"model package directory {out} already exists and is not empty",
            hint="choose a new directory or pass overwrite=True",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create model package directory {out}: {exc}") from None

    params = parameter_count(model)
    tensors = state_dict_for_save(model)
    _atomic(out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"architecture": model.spec.name}))
    sha = file_sha256(out / WEIGHTS_FILE)
    size = (out / WEIGHTS_FILE).stat().st_size
    g = chip_size // CELL_STRIDE  # cells per chip side

    props = {
        "description": f"Groundbreak construction-activity model {model_id} {version}"
        + (" (DEMO weights: not validated on real construction imagery)" if demo else ""),
        "datetime": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "mlm:name": model_id,
        "mlm:architecture": model.spec.name,
        "mlm:tasks": ["classification", "semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:total_parameters": params,
        "mlm:pretrained": False,
        "mlm:pretrained_source": None,
        "mlm:batch_size_suggestion": 16,
        "mlm:accelerator": "amd64",
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": "CPU (x86-64); fastest with OpenVINO int8 on AVX-512 VNNI",
        "mlm:input": [
            {
                "name": "rgbn-chip",
                "bands": list(bands),
                "input": {
                    "shape": [-1, len(bands), chip_size, chip_size],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "description": "Scene values scaled by groundbreak:dtype_scaling for the scene dtype, "
                "then z-scored per band with value_scaling. Nodata pixels are not special-cased.",
                "value_scaling": [
                    {"type": "z-score", "mean": float(m), "stddev": float(s)} for m, s in zip(mean, std, strict=True)
                ],
                "resize_type": None,
                "pre_processing_function": {
                    "format": "python",
                    "expression": "groundbreak.model:ModelPackage.preprocess",
                },
            }
        ],
        "mlm:output": [
            {
                "name": "chip-logit",
                "tasks": ["classification"],
                "description": "One logit per chip for the positive class; sigmoid gives the score.",
                "result": {"shape": [-1], "dim_order": ["batch"], "data_type": "float32"},
                "classification:classes": _classes(),
                "post_processing_function": {"format": "python", "expression": "groundbreak.inference:sigmoid"},
            },
            {
                "name": "cell-logits",
                "tasks": ["semantic-segmentation"],
                "description": f"Coarse activity map: one logit per {chip_size // g} px cell ({g}x{g} per chip).",
                "result": {"shape": [-1, g, g], "dim_order": ["batch", "height", "width"], "data_type": "float32"},
                "classification:classes": _classes(),
                "post_processing_function": {"format": "python", "expression": "groundbreak.inference:sigmoid"},
            },
        ],
        "groundbreak:version": version,
        "groundbreak:engine_version": groundbreak.__version__,
        "groundbreak:gsd": float(gsd),
        "groundbreak:gsd_range": [float(gsd_range[0]), float(gsd_range[1])],
        "groundbreak:dtype_scaling": {
            k: {"offset": float(o), "scale": float(s)} for k, (o, s) in dtype_scaling.items()
        },
        "groundbreak:threshold": float(threshold),
        "groundbreak:positive_class": CLASSES[1],
        "groundbreak:cell_grid": g,
        "groundbreak:demo": bool(demo),
        "groundbreak:runtime": runtime,
        "groundbreak:weights": {"file": WEIGHTS_FILE, "sha256": sha},
    }
    if metrics:
        props["groundbreak:metrics"] = {k: float(v) for k, v in metrics.items()}
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [MLM_SCHEMA, "https://stac-extensions.github.io/file/v2.1.0/schema.json"],
        "id": f"{model_id}-{version}",
        "geometry": None,
        "properties": props,
        "assets": {
            "weights": {
                "href": f"./{WEIGHTS_FILE}",
                "title": f"{model.spec.name} weights (safetensors, fp32)",
                "type": "application/octet-stream; application=safetensors",
                "roles": ["mlm:model", "mlm:weights", "weights"],
                "mlm:artifact_type": "safetensors",
                "file:size": size,
                "file:checksum": "1220" + sha,  # multihash: 0x12 = sha2-256, 0x20 = 32 bytes
            },
            "card": {"href": f"./{CARD_FILE}", "title": "Model card", "type": "text/markdown", "roles": ["metadata"]},
        },
        "links": [],
    }
    card = render_card(
        model_id=model_id,
        version=version,
        demo=demo,
        architecture=model.spec.name,
        params=params,
        bands=bands,
        gsd=gsd,
        gsd_range=gsd_range,
        chip_size=chip_size,
        threshold=threshold,
        training_data=training_data,
        metrics=metrics,
        intended_use=intended_use,
        limits=limits,
        notes=card_text,
        sha=sha,
    )
    _atomic(out / CARD_FILE, lambda p: p.write_text(card, encoding="utf-8"))
    _atomic(out / MODEL_JSON, lambda p: p.write_text(json.dumps(item, indent=2) + "\n", encoding="utf-8"))
    return load_model_package(out)


def render_card(
    *,
    model_id: str,
    version: str,
    demo: bool,
    architecture: str,
    params: int,
    bands: Sequence[str],
    gsd: float,
    gsd_range: Tuple[float, float],
    chip_size: int,
    threshold: float,
    training_data: str,
    metrics: Optional[Mapping[str, float]],
    intended_use: str,
    limits: str,
    notes: str,
    sha: str,
) -> str:
    """The model card (Markdown). Its first paragraph is the summary shown in outputs and the UI."""
    if demo:
        summary = (
            "**DEMO MODEL.** These weights were not trained or validated on labelled real "
            "construction imagery. Scores are for trying the software only: do not use them for "
            "decisions."
        )
    else:
        summary = f"Construction-activity model {model_id} {version} for 4-band imagery at about {gsd:g} m/px."
    if metrics:
        metric_lines = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.items())
        metric_text = "| metric | value |\n| --- | --- |\n" + metric_lines
    else:
        metric_text = "No evaluation metrics: the model has not been evaluated" + (
            " (demo weights)." if demo else "."
        )
    training = training_data or (
        "None: random weights with BatchNorm statistics calibrated on synthetic chips."
        if demo
        else "Not recorded."
    )
    return f"""# {model_id} {version}

{summary}

## Model
- Architecture: `{architecture}` (ResNet-18-like, native {len(bands)}-band input), {params:,} parameters
- Input: bands {", ".join(bands)} (in this order), {chip_size}x{chip_size} px chips at {gsd:g} m/px
  (accepted {gsd_range[0]:g}-{gsd_range[1]:g} m/px)
- Outputs: a construction score per chip and a coarse activity map per chip
- Detection threshold: {threshold:g}
- Weights: `{WEIGHTS_FILE}`, sha256 `{sha}`

## Training data
{training}

## Metrics
{metric_text}

## Intended use
{intended_use}

## Limits
{limits}
{"" if not demo else chr(10) + DEMO_PROVENANCE + chr(10)}
## Notes
{notes or "None."}
"""


def make_random_package(
    out_dir: "str | Path",
    *,
    seed: int = 0,
    width: int = 8,
    demo: bool = True,
    bands: Sequence[str] = DEFAULT_BANDS,
    chip_size: int = 256,
    threshold: float = 0.5,
    model_id: Optional[str] = None,
    version: str = "0.0.0",
    overwrite: bool = False,
) -> ModelPackage:
    """A package with fixed random weights (``resnet18-w{width}``); same seed -> same weights file.

    The residual branches keep the zero-initialised last BatchNorm of a fresh training network
    (randomising them makes an untrained BN network chaotic: int8 rounding then moves scores by
    0.1-0.3); the other BN gains are drawn from U(0.5, 1.5), BN statistics are calibrated on
    synthetic chips, and the heads are rescaled so scores spread over (0, 1) instead of saturating.
    """
    arch = f"resnet18-w{width}"
    net = build_network(arch, len(bands), seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        residual_out = {id(m.bn2) for m in net.modules() if isinstance(m, BasicBlock)}
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and id(m) not in residual_out:
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.normal_(m.bias, std=0.1)
        torch.nn.init.normal_(net.chip_head.weight, std=1.0)
        torch.nn.init.normal_(_cell_out(net).weight, std=1.0)
    from groundbreak.torch_runtime import synthetic_inputs

    cal = [torch.from_numpy(synthetic_inputs(8, len(bands), chip_size, seed=seed * 100 + i)) for i in range(2)]
    calibrate_batchnorm(net, lambda i: cal[i], steps=len(cal))
    _standardise_heads(net, torch.cat(cal))
    return write_model_package(
        out_dir,
        net,
        model_id=model_id or f"groundbreak-random-{arch}-s{seed}",
        version=version,
        demo=demo,
        threshold=threshold,
        card_text=f"Random weights from make_random_package(seed={seed}, width={width}).",
        bands=bands,
        chip_size=chip_size,
        overwrite=overwrite,
    )


def _standardise_heads(net: ChipNet, x: torch.Tensor) -> None:
    """Redraw each head's last layer so its logits on ``x`` are centred with a spread of ~1.5.

    Weights are scaled by fan-in and by the RMS of the features they read (not by the between-chip
    spread of the logits: pooled random features barely differ between chips, and amplifying that
    difference would also amplify rounding noise and make every runtime look inexact).
    """
    feats: dict = {}
    heads: Tuple[Tuple[str, torch.nn.Module], ...] = (("chip", net.chip_head), ("cells", _cell_out(net)))
    hooks = [
        layer.register_forward_hook(lambda mod, inp, out, key=key: feats.__setitem__(key, inp[0]))
        for key, layer in heads
    ]
    try:
        with torch.no_grad():
            net.eval()(x)
            for key, layer in heads:
                weight, bias = layer.weight, layer.bias
                assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
                f = feats[key]
                fan_in = weight[0].numel()
                rms = float(f.pow(2).mean().sqrt()) or 1.0
                weight.mul_(1.5 / (float(weight.std()) * fan_in**0.5 * rms))
                bias.zero_()
            chip, cells = net(x)
            net.chip_head.bias.sub_(float(chip.mean()))
            cell_bias = _cell_out(net).bias
            assert cell_bias is not None
            cell_bias.sub_(float(cells.mean()))
    finally:
        for h in hooks:
            h.remove()


def _cell_out(net: ChipNet) -> torch.nn.Conv2d:
    """The cell head's last layer (a 1x1 convolution to one logit per cell)."""
    layer = net.cell_head[-1]
    assert isinstance(layer, torch.nn.Conv2d)
    return layer


def _classes() -> list:
    return [
        {"value": 0, "name": CLASSES[0], "description": "no heavy construction activity"},
        {"value": 1, "name": CLASSES[1], "description": "earthworks, cleared/graded land or foundations"},
    ]


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        readable(tmp_path)  # mkstemp makes it private (0600); a package is for sharing
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def random_chips(
    n: int,
    *,
    bands: int = 4,
    size: int = 256,
    dtype: str = "uint16",
    seed: int = 0,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> np.ndarray:
    """Raw scene-like chips (N, bands, size, size) for tests and benchmarks.

    ``synthetic_inputs`` mapped back through the default normalisation and dtype scaling, so they
    land inside the distribution a package with the default statistics expects.
    """
    from groundbreak.torch_runtime import synthetic_inputs

    x = synthetic_inputs(n, bands, size, seed=seed).astype(np.float64)
    m = np.resize(np.asarray(mean, np.float64), bands)[None, :, None, None]
    s = np.resize(np.asarray(std, np.float64), bands)[None, :, None, None]
    reflectance = np.clip(x * s + m, 0.0, None)
    if dtype == "float32":
        return reflectance.astype(np.float32)
    offset, scale = DEFAULT_DTYPE_SCALING[dtype]
    info = np.iinfo(dtype)
    return np.clip(np.rint(reflectance / scale + offset), 1, info.max).astype(dtype)
