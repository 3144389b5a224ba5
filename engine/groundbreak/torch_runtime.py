"""The runtimes built from the torch network: eager, TorchScript, torch int8, and conversion to OpenVINO.

Imported only when a runtime needs the network itself (a package without an OpenVINO artifact, a
parity check against eager, training, quantizing): ``groundbreak.inference`` never imports it for a
package whose OpenVINO IR it can compile directly, so such a run never imports torch or NNCF.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import threading
import time
import warnings
from typing import Any, Iterator, Optional

import numpy as np
import torch

from groundbreak.errors import DependencyError
from groundbreak.model import ModelPackage
from groundbreak.network import ChipNet, build_network, load_weights
from groundbreak.openvino_runtime import Engine, Outputs, block_telemetry, import_openvino

log = logging.getLogger(__name__)

#: Node-name patterns of the network heads in a converted OpenVINO model (left in fp32 by int8).
HEAD_PATTERNS = [r".*cell_head.*", r".*chip_head.*"]
NNCF_PIP = "pip install 'nncf>=2.10'"

_interop_lock = threading.Lock()
_interop_done = False


def set_threads(threads: int) -> None:
    """Intra-op threads every call (cheap); inter-op threads once per process (torch allows one set)."""
    global _interop_done
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with _interop_lock:
        if not _interop_done:
            _interop_done = True
            try:
                # A CNN has no independent ops to overlap: more inter-op threads only oversubscribe.
                torch.set_num_interop_threads(1)
            except RuntimeError:
                log.debug("torch inter-op threads already fixed; leaving them")


def synthetic_inputs(n: int, channels: int, size: int, *, seed: int = 0) -> np.ndarray:
    """``n`` normalised float32 chips (N, C, size, size) that look more like imagery than noise:
    band-correlated smooth fields at two scales, pixel noise, and a few bright rectangles."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 8, 8, generator=g)
    mid = torch.randn(n, channels, 32, 32, generator=g)
    x = 0.8 * torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.5 * torch.nn.functional.interpolate(mid, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.25 * torch.randn(n, channels, size, size, generator=g)
    out = x.numpy().astype(np.float32)
    for i in range(n):
        for _ in range(int(rng.integers(0, 4))):
            h, w = rng.integers(size // 16, size // 3, size=2)
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            out[i, :, r : r + h, c : c + w] += rng.uniform(0.5, 2.0, size=(channels, 1, 1)).astype(np.float32)
    return out


def load_network(package: ModelPackage) -> ChipNet:
    """The package's architecture filled with its weights (safetensors, strict keys), in eval mode."""
    net = build_network(package.architecture, len(package.bands), seed=None)
    load_weights(net, package.weights_path)
    return net.eval()


def example_input(package: ModelPackage, n: int = 4) -> torch.Tensor:
    """A small synthetic batch for tracing (values never matter, shapes do)."""
    return torch.from_numpy(synthetic_inputs(n, len(package.bands), package.chip_size, seed=7))


def eager_engine(net: torch.nn.Module) -> Engine:
    return _torch_engine(net, channels_last=False)


def torchscript_engine(net: torch.nn.Module, example: torch.Tensor) -> Engine:
    return _torch_engine(_freeze(net, example, channels_last=True), channels_last=True)


def torch_int8_engine(net: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray, batch: int) -> Engine:
    """FX graph-mode static int8 (x86 backend) calibrated on ``calibration``, heads in fp32, frozen."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise DependencyError("this torch build has no x86 quantised backend", hint="use 'openvino-int8'")
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantisation is deprecated in favour of torchao
        mapping = get_default_qconfig_mapping("x86")
        for head in ("chip_head", "cell_head"):
            mapping = mapping.set_module_name(head, None)  # fp32 heads, as for OpenVINO
        prepared = prepare_fx(copy.deepcopy(net).eval(), mapping, (example,))
        with torch.inference_mode():
            for i in range(0, calibration.shape[0], batch):
                prepared(torch.from_numpy(calibration[i : i + batch]))
        quantised = convert_fx(prepared)
        frozen = _freeze(quantised, example, channels_last=False)
    return _torch_engine(frozen, channels_last=False)


def to_openvino(net: torch.nn.Module, package: ModelPackage) -> Any:
    """The network as an ``openvino.Model`` with a dynamic batch (``openvino.convert_model``)."""
    ov = import_openvino()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            model = ov.convert_model(net, example_input=example_input(package))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, len(package.bands), package.chip_size, package.chip_size])})
    return model


#: How int8 is calibrated, in words (recorded with an int8 IR).
QUANTIZATION_METHOD = ("NNCF post-training static int8: histogram activation ranges, asymmetric activations "
                       "(mixed preset), fast bias correction, heads in fp32")


def quantize_openvino(model: Any, calibration: np.ndarray, *, subset: Optional[int] = None) -> Any:
    """NNCF post-training static int8 of an fp32 ``openvino.Model``, calibrated on ``calibration``
    (preprocessed chips, one per calibration sample); the two small heads stay fp32.

    Activation ranges come from histograms (the range that minimises the quantisation error), not
    from the extreme values: real chips reach z-scores of 12 on bright soil and machinery, and
    min/max ranges stretched that far left the default model F1 0.75 (recall 0.60) on the unseen
    demo world against 0.966 in fp32; histogram ranges with asymmetric activations kept 0.966
    (max |dscore| 0.047). Measured with 300 chips of a training world, see its model card.
    """
    block_telemetry()  # NNCF would otherwise load openvino_telemetry first
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError:
        raise DependencyError(
            "int8 calibration needs the Python package 'nncf', which is not installed",
            hint=f"{NNCF_PIP} (into the engine's virtualenv)",
        ) from None
    t0 = time.perf_counter()
    cal = np.ascontiguousarray(calibration, dtype=np.float32)
    dataset = nncf.Dataset([cal[i : i + 1] for i in range(cal.shape[0])])
    with _nncf_off_stdout():
        quantised = nncf.quantize(
            model, dataset, subset_size=subset or cal.shape[0], fast_bias_correction=True,
            preset=nncf.QuantizationPreset.MIXED,
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM),
            # The heads are tiny; kept in fp32 they halve the score error (0.027 -> 0.014 on
            # resnet18-w32 random weights) at no measurable speed cost.
            ignored_scope=nncf.IgnoredScope(patterns=HEAD_PATTERNS, validate=False),
        )  # fmt: skip
    log.info("int8 calibration on %d chips took %.1f s", cal.shape[0], time.perf_counter() - t0)
    return quantised


def _torch_engine(module: torch.nn.Module, *, channels_last: bool) -> Engine:
    def run(x: np.ndarray) -> Outputs:
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            chip, cells = module(t)
        return chip.float().numpy(), cells.float().numpy()

    return run


def _freeze(module: torch.nn.Module, example: torch.Tensor, *, channels_last: bool) -> torch.nn.Module:
    module = copy.deepcopy(module).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        example = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is in maintenance mode; it still runs fastest here
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
            frozen = torch.jit.freeze(traced)
            # Two warm-up runs let the profiling executor specialise before any timing.
            for _ in range(2):
                frozen(example)
    return frozen


@contextlib.contextmanager
def _nncf_off_stdout() -> Iterator[None]:
    """Keep NNCF's log handler and rich progress bars off stdout, which carries the JSON-lines
    protocol: its logger writes to the ``sys.stdout`` of import time, its bars to rich's console."""
    import rich

    for handler in logging.getLogger("nncf").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)
            handler.setLevel(logging.WARNING)
    console = rich.get_console()
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


__all__ = [
    "HEAD_PATTERNS",
    "eager_engine",
    "example_input",
    "load_network",
    "quantize_openvino",
    "set_threads",
    "synthetic_inputs",
    "to_openvino",
    "torch_int8_engine",
    "torchscript_engine",
]
