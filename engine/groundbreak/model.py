"""Model packages: a directory with ``model.json`` (STAC MLM fields), weights and a model card.

This module never imports torch; ``groundbreak.inference`` does.

CONTRACT (relied on by plan/run/CLI/plugin):

- ``default_model_path() -> Path``: the default package in ``resources/models/`` (override with the
  ``GROUNDBREAK_MODEL`` environment variable).
- ``load_model_package(path: str | Path | None) -> ModelPackage``: validates model.json (clear
  ModelError naming the field and file), checks the weights file exists and its sha256 matches.
- ``ModelPackage.preprocess(chips: np.ndarray, dtype: str) -> np.ndarray``: raw chips
  (N, bands, H, W) in the scene dtype -> float32 scaled per dtype and normalised per band.
  Unsupported dtype -> ModelError.

Package layout (written by ``groundbreak.modelpack.write_model_package``)::

    <package>/model.json          a STAC Item whose properties carry the mlm:* and groundbreak:* fields
    <package>/weights.safetensors raw tensors only (never a pickle), sha256 in groundbreak:weights
    <package>/README.md           the model card (training data, metrics, intended use, limits)

``model.json`` follows the STAC Machine Learning Model extension (mlm v1.4): ``mlm:name``,
``mlm:architecture`` (a name from ``groundbreak.network.ARCHITECTURES``), ``mlm:framework``,
``mlm:input`` (bands by common name, input shape/dim_order/data_type, per-band ``z-score``
``value_scaling``), ``mlm:output`` (a chip ``classification`` head and a ``semantic-segmentation``
cell head with ``classification:classes``). What MLM does not cover lives under ``groundbreak:*``:
version, gsd and accepted gsd range, dtype scaling, threshold, positive class, cell grid, demo flag,
weights file and hash. A flat JSON object with the same keys (no STAC Item wrapper) is accepted too.

Preprocessing, in this order: ``x1 = (x - offset[dtype]) * scale[dtype]`` then
``x2 = (x1 - mean[band]) / std[band]``. Nodata pixels are NOT special-cased: a 0 becomes
``-mean/std`` like any other value; screening drops chips with too many of them before inference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from groundbreak.cache import is_safe_name
from groundbreak.errors import BandMismatchError, ModelError, UsageError
from groundbreak.names import RUNTIMES

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
CARD_FILE = "README.md"
WEIGHTS_FILE = "weights.safetensors"
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"

#: STAC EO common band names (plus "alpha" is deliberately absent: it is never model input).
KNOWN_BANDS = frozenset(
    {
        "coastal", "blue", "green", "red", "yellow", "pan", "rededge", "rededge071",
        "rededge075", "rededge078", "nir", "nir08", "nir09", "cirrus", "swir16", "swir22",
        "lwir", "lwir11", "lwir12",
    }
)  # fmt: skip

#: Scene dtypes a package may declare a scaling for (numpy names, as ``Scene.dtype``).
KNOWN_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"}
)

DIM_ORDER = ("batch", "channel", "height", "width")


#: Runtimes that run an OpenVINO IR carried by the package -> the artifact they use.
ARTIFACT_FOR_RUNTIME = {"openvino": "openvino", "openvino-bf16": "openvino", "openvino-int8": "openvino-int8"}
ARTIFACTS = ("openvino", "openvino-int8")


@dataclass(frozen=True, slots=True)
class ModelArtifact:
    """A compiled-runtime form of the weights inside the package: an OpenVINO IR (graph + weights, no code).

    ``weights_sha256`` names the weights it was made from: an artifact of other weights is stale.
    ``calibration`` describes the chips an int8 artifact was calibrated on (free-form, for provenance).
    """

    name: str  # "openvino" (fp32) or "openvino-int8"
    xml: str  # package-relative paths
    bin: str
    xml_sha256: str
    bin_sha256: str
    weights_sha256: str
    precision: str  # "fp32" | "int8"
    openvino_version: str = ""
    calibration: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: runtime -> what it scored with this IR, as measured when the IR was made (``quantize``).
    validation: Mapping[str, "RuntimeValidation"] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class RuntimeValidation:
    """What the package records about one inference runtime, measured on labelled chips.

    ``passed`` is the verdict the engine acts on: a runtime whose record failed is refused (unless
    forced) and never chosen by ``auto``. The figures say why: chip F1 on ``data`` (``chips`` chips)
    against ``reference_f1`` of ``reference_runtime`` on the same chips, and the score changes.
    """

    runtime: str
    passed: bool
    f1: Optional[float] = None
    reference_f1: Optional[float] = None
    reference_runtime: str = "eager"
    data: str = ""
    chips: int = 0
    max_abs_dscore: Optional[float] = None
    mean_abs_dscore: Optional[float] = None
    max_f1_drop: Optional[float] = None  # the pass criterion: f1 >= reference_f1 - max_f1_drop
    seen_in_training: Optional[bool] = None
    artifact: str = ""  # the package artifact the figures were measured with ("" none)
    note: str = ""

    def describe(self) -> str:
        """One line for errors and logs, e.g. "F1 0.000 against 0.966 (eager) on demo world 7 (491 chips)"."""
        parts = []
        if self.f1 is not None:
            ref = "" if self.reference_f1 is None else f" against {self.reference_f1:.3f} ({self.reference_runtime})"
            parts.append(f"F1 {self.f1:.3f}{ref}")
        if self.max_abs_dscore is not None:
            parts.append(f"max |dscore| {self.max_abs_dscore:.3f}")
        text = ", ".join(parts) or ("passed" if self.passed else "failed")
        if self.data:
            text += f" on {self.data}"
        if self.chips:
            text += f" ({self.chips} chips)"
        return text


@dataclass(frozen=True, slots=True)
class ModelPackage:
    root: Path
    model_id: str  # e.g. "groundbreak-demo-resnet18h-4b"
    version: str
    sha256: str  # of the weights file
    bands: Tuple[str, ...]  # e.g. ("red", "green", "blue", "nir"); order = channel order
    chip_size: int  # pixels, e.g. 256
    gsd: float  # metres per pixel, e.g. 2.0
    gsd_range: Tuple[float, float]  # accepted range without a warning
    classes: Tuple[str, ...]  # e.g. ("background", "construction")
    positive_class: str
    threshold: float  # score >= threshold -> detection
    demo: bool  # True: weights not validated on real construction imagery
    architecture: str
    cell_grid: int  # side of the coarse activity map per chip, e.g. 16
    scaling: Mapping[str, Tuple[float, float]]  # dtype -> (offset, scale): x' = (x - offset) * scale
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    weights_file: str
    card_summary: str = ""
    runtime: str = "auto"
    framework_version: str = ""  # torch version the weights were written with ("" unknown)
    #: runtime name -> its recorded validation (``groundbreak:runtime_validation``).
    runtime_validation: Mapping[str, RuntimeValidation] = field(default_factory=dict)
    #: artifact name ("openvino", "openvino-int8") -> the IR in the package (``groundbreak:artifacts``).
    artifacts: Mapping[str, ModelArtifact] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def chip_size_m(self) -> float:
        return self.chip_size * self.gsd

    @property
    def weights_path(self) -> Path:
        return self.root / self.weights_file

    @property
    def card_path(self) -> Path:
        return self.root / CARD_FILE

    def artifact_for(self, runtime: str) -> Optional[ModelArtifact]:
        """The package's IR for ``runtime`` ("openvino-bf16" runs the fp32 IR), or None."""
        name = ARTIFACT_FOR_RUNTIME.get(runtime)
        return self.artifacts.get(name) if name else None

    def accepts_gsd(self, gsd: float) -> bool:
        """True when a scene of this resolution (m/px) is inside the model's accepted range."""
        lo, hi = self.gsd_range
        return lo <= gsd <= hi

    def provenance(self) -> dict:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "sha256": self.sha256,
            "demo": self.demo,
            "bands": list(self.bands),
            "gsd": self.gsd,
            "chip_size": self.chip_size,
            "architecture": self.architecture,
        }

    def affine(self, dtype: str) -> Tuple[np.ndarray, np.ndarray]:
        """Per-band ``(a, b)`` with ``preprocess(x) == x * a + b`` for scene dtype ``dtype``."""
        key = np.dtype(dtype).name if _is_dtype(dtype) else str(dtype)
        if key not in self.scaling:
            raise ModelError(
                f"model {self.model_id!r} has no scaling for scene dtype {key!r} "
                f"(it declares {', '.join(sorted(self.scaling))})",
                hint=f"convert the imagery to one of those dtypes, or add {key!r} to "
                f"groundbreak:dtype_scaling in {self.root / MODEL_JSON}",
            )
        return scaling_affine(self.scaling[key], self.mean, self.std)

    def check_chips(self, chips: np.ndarray, *, size: bool = True) -> None:
        """A batch must be (N, bands, H, W) with this model's band count (and chip size)."""
        if chips.ndim != 4:
            raise UsageError(
                f"chips must be (N, bands, H, W), got shape {chips.shape}",
                hint="stack chips with numpy.stack; a single chip needs a leading batch axis",
            )
        if chips.shape[1] != len(self.bands):
            raise BandMismatchError(
                f"a batch with {chips.shape[1]} bands was given to model {self.model_id!r}, which expects "
                f"{len(self.bands)} bands ({', '.join(self.bands)})",
                hint="read the scene bands chosen by groundbreak.scene.select_bands for this model",
            )
        if size and chips.shape[2:] != (self.chip_size, self.chip_size):
            raise UsageError(
                f"chips are {chips.shape[2]}x{chips.shape[3]} px but model {self.model_id!r} takes "
                f"{self.chip_size}x{self.chip_size}",
                hint="plan the chip grid with the model's chip size",
            )

    def preprocess(self, chips: np.ndarray, dtype: Optional[str] = None) -> np.ndarray:
        """Raw chips (N, C, H, W) of scene dtype ``dtype`` -> normalised float32 (N, C, H, W).

        ``dtype`` defaults to ``chips.dtype``; pass the scene's dtype when chips were already cast.
        """
        chips = np.asarray(chips)
        self.check_chips(chips, size=False)
        a, b = self.affine(dtype if dtype is not None else chips.dtype.name)
        return apply_affine(chips, a, b)


def scaling_affine(offset_scale: Tuple[float, float], mean: Sequence[float], std: Sequence[float]
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-band ``(a, b)`` so that ``x * a + b`` scales raw values by dtype, then z-scores them.
    The one definition of the network's input, shared by inference and training."""
    offset, scale = offset_scale
    mean64 = np.asarray(mean, dtype=np.float64)
    std64 = np.asarray(std, dtype=np.float64)
    a = scale / std64
    b = (-offset * scale - mean64) / std64
    return a.astype(np.float32), b.astype(np.float32)


def apply_affine(chips: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = chips.astype(np.float32, copy=True)
    out *= a[None, :, None, None]
    out += b[None, :, None, None]
    return out


def default_model_path() -> Path:
    """``$GROUNDBREAK_MODEL`` if set, else ``<repo>/resources/models/groundbreak-demo``."""
    env = os.environ.get("GROUNDBREAK_MODEL")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "resources" / "models" / "groundbreak-demo"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_package(path: "str | Path | None" = None) -> ModelPackage:
    """Read and validate a model package (a directory, or its ``model.json``); see module docs."""
    root = Path(path).expanduser() if path is not None else default_model_path()
    if root.is_file() or root.name == MODEL_JSON:
        meta_path, root = root, root.parent
    else:
        meta_path = root / MODEL_JSON
    if not root.is_dir():
        raise ModelError(
            f"model package directory not found: {root}",
            hint="pass --model with a package directory (containing model.json), or set "
            "GROUNDBREAK_MODEL",
        )
    if not meta_path.is_file():
        raise ModelError(
            f"model package {root} has no {MODEL_JSON}",
            hint="a model package is a directory with model.json, weights.safetensors and README.md",
        )
    text = meta_path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{meta_path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            hint="fix the JSON syntax (a validator or `python -m json.tool` shows the spot)",
        ) from None
    return _parse(doc, root, meta_path)


class _Fields:
    """Typed access to one JSON object; every error names the field and the file."""

    def __init__(self, obj: Mapping[str, Any], where: str, path: Path) -> None:
        self.obj, self.where, self.path = obj, where, path

    def fail(self, key: str, problem: str, hint: str = "") -> ModelError:
        name = f"{self.where}.{key}" if self.where else key
        return ModelError(
            f"{self.path}: field {name!r} {problem}",
            hint=hint or "see the model package format in groundbreak/model.py",
        )

    def get(self, key: str, kind: "type | tuple[type, ...]", *, default: Any = ..., what: str = "") -> Any:
        if key not in self.obj:
            if default is not ...:
                return default
            raise self.fail(key, "is missing")
        value = self.obj[key]
        # bool is an int subclass; a JSON true is never a valid number here.
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = what or " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"must be {expected}, got {type(value).__name__} {_short(value)}")
        return value

    def number(self, key: str, **kw: Any) -> float:
        value = self.get(key, (int, float), what="a number", **kw)
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value}")
        return float(value)

    def child(self, key: str, value: Mapping[str, Any]) -> "_Fields":
        name = f"{self.where}.{key}" if self.where else key
        return _Fields(value, name, self.path)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_dtype(name: Any) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


def _parse(doc: Any, root: Path, meta_path: Path) -> ModelPackage:
    if not isinstance(doc, dict):
        raise ModelError(f"{meta_path}: top level must be a JSON object, got {type(doc).__name__}")
    if doc.get("type") == "Feature":
        props_obj = doc.get("properties")
        if not isinstance(props_obj, dict):
            raise ModelError(f"{meta_path}: field 'properties' must be an object in a STAC Item")
        top = _Fields(props_obj, "properties", meta_path)
    else:
        top = _Fields(doc, "", meta_path)

    model_id = top.get("mlm:name", str)
    if not is_safe_name(model_id):
        # The name reaches cache and output file names: it must not be able to point elsewhere.
        raise top.fail(
            "mlm:name",
            f"must be 1-64 letters, digits, '.', '-' or '_' starting with a letter or digit, got {_short(model_id)}",
            hint="rename the model in model.json (e.g. 'my-model-v2')",
        )
    architecture = top.get("mlm:architecture", str)
    framework = top.get("mlm:framework", str)
    if framework.lower() != "pytorch":
        raise top.fail("mlm:framework", f"must be 'pytorch', got {framework!r}")
    framework_version = top.get("mlm:framework_version", str, default="")
    version = top.get("groundbreak:version", str)

    # -- input ---------------------------------------------------------------------------------
    inputs = top.get("mlm:input", list, what="a list of input objects")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise top.fail("mlm:input", f"must hold exactly one input object, got {_short(inputs)}")
    inp = top.child("mlm:input[0]", inputs[0])
    bands = _parse_bands(inp)
    structure = inp.child("input", inp.get("input", dict, what="an object"))
    shape = structure.get("shape", list, what="a list of 4 integers")
    if len(shape) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise structure.fail("shape", f"must be 4 integers [batch, channel, height, width], got {shape}")
    dim_order = structure.get("dim_order", list)
    if tuple(dim_order) != DIM_ORDER:
        raise structure.fail("dim_order", f"must be {list(DIM_ORDER)}, got {dim_order}")
    data_type = structure.get("data_type", str)
    if data_type != "float32":
        raise structure.fail("data_type", f"must be 'float32' (the model input), got {data_type!r}")
    if shape[1] != len(bands):
        raise structure.fail(
            "shape", f"declares {shape[1]} channels but bands lists {len(bands)} ({', '.join(bands)})"
        )
    if shape[2] != shape[3] or shape[2] <= 0:
        raise structure.fail("shape", f"height and width must be equal and positive, got {shape}")
    chip_size = shape[2]
    mean, std = _parse_value_scaling(inp, len(bands))

    # -- output --------------------------------------------------------------------------------
    outputs = top.get("mlm:output", list, what="a list of output objects")
    classes: Tuple[str, ...] = ()
    cell_shape: Optional[Sequence[int]] = None
    for i, out_obj in enumerate(outputs):
        if not isinstance(out_obj, dict):
            raise top.fail(f"mlm:output[{i}]", "must be an object")
        out = top.child(f"mlm:output[{i}]", out_obj)
        out.get("name", str)
        tasks = out.get("tasks", list)
        result = out.child("result", out.get("result", dict, what="an object"))
        rshape = result.get("shape", list)
        result.get("dim_order", list)
        if "classification" in tasks or "scene-classification" in tasks:
            classes = _parse_classes(out)
        if "semantic-segmentation" in tasks or "segmentation" in tasks:
            cell_shape = rshape
    if not classes:
        raise top.fail(
            "mlm:output",
            "has no output with task 'classification' and classification:classes",
        )

    # -- groundbreak:* ---------------------------------------------------------------------------
    gsd = top.number("groundbreak:gsd")
    if gsd <= 0:
        raise top.fail("groundbreak:gsd", f"must be > 0 metres per pixel, got {gsd}")
    gsd_range_raw = top.get("groundbreak:gsd_range", list, what="a list [min, max]")
    if (
        len(gsd_range_raw) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in gsd_range_raw)
        or not (0 < gsd_range_raw[0] <= gsd <= gsd_range_raw[1])
    ):
        raise top.fail(
            "groundbreak:gsd_range", f"must be [min, max] with 0 < min <= gsd ({gsd}) <= max, got {gsd_range_raw}"
        )
    scaling = _parse_dtype_scaling(top)
    threshold = top.number("groundbreak:threshold")
    if not 0.0 <= threshold <= 1.0:
        raise top.fail("groundbreak:threshold", f"must be within [0, 1], got {threshold}")
    positive_class = top.get("groundbreak:positive_class", str)
    if positive_class not in classes:
        raise top.fail(
            "groundbreak:positive_class", f"{positive_class!r} is not one of the classes {list(classes)}"
        )
    cell_grid = top.get("groundbreak:cell_grid", int, what="an integer")
    if cell_grid <= 0 or chip_size % cell_grid:
        raise top.fail(
            "groundbreak:cell_grid", f"must be a positive divisor of the chip size {chip_size}, got {cell_grid}"
        )
    if cell_shape is not None and list(cell_shape[-2:]) != [cell_grid, cell_grid]:
        raise top.fail(
            "mlm:output", f"cell output shape {cell_shape} disagrees with groundbreak:cell_grid {cell_grid}"
        )
    demo = top.get("groundbreak:demo", bool, what="true or false")
    runtime = top.get("groundbreak:runtime", str, default="auto")
    weights = top.child("groundbreak:weights", top.get("groundbreak:weights", dict, what="an object"))
    weights_file = weights.get("file", str)
    sha256 = weights.get("sha256", str).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise weights.fail("sha256", f"must be 64 hex digits, got {_short(sha256)}")
    weights_path = _inside(root, weights_file, weights)
    if not weights_path.is_file():
        raise ModelError(
            f"{meta_path}: weights file {weights_path} (groundbreak:weights.file) not found",
            hint="copy the whole package directory, including its weights file",
        )
    actual = file_sha256(weights_path)
    if actual != sha256:
        raise ModelError(
            f"{weights_path}: sha256 {actual} does not match groundbreak:weights.sha256 {sha256} "
            f"in {meta_path}",
            hint="the weights were changed or damaged in transit: copy the package again "
            "(or rewrite model.json with groundbreak.modelpack if the change is intended)",
        )

    validation = _parse_runtime_validation(top)
    artifacts = _parse_artifacts(top, root)
    card_summary = _card_summary(root / CARD_FILE)
    return ModelPackage(
        root=root,
        model_id=model_id,
        version=version,
        sha256=sha256,
        bands=bands,
        chip_size=chip_size,
        gsd=gsd,
        gsd_range=(float(gsd_range_raw[0]), float(gsd_range_raw[1])),
        classes=classes,
        positive_class=positive_class,
        threshold=threshold,
        demo=demo,
        architecture=architecture,
        cell_grid=cell_grid,
        scaling=scaling,
        mean=mean,
        std=std,
        weights_file=weights_file,
        card_summary=card_summary,
        runtime=runtime,
        framework_version=framework_version,
        runtime_validation=validation,
        artifacts=artifacts,
        metadata=doc,
    )


def _parse_bands(inp: _Fields) -> Tuple[str, ...]:
    raw = inp.get("bands", list, what="a list of band names")
    names = []
    for item in raw:
        # MLM allows a band as a plain string or a Model Band Object {"name": ...}.
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or name.lower() not in KNOWN_BANDS:
            raise inp.fail(
                "bands",
                f"has {_short(item)}, which is not a known band name",
                hint=f"use STAC common band names: {', '.join(sorted(KNOWN_BANDS))}",
            )
        names.append(name.lower())
    if not names:
        raise inp.fail("bands", "is empty: the model must name its input bands")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise inp.fail("bands", f"repeats {', '.join(dupes)}: each band may appear once ({names})")
    return tuple(names)


def _parse_value_scaling(inp: _Fields, n_bands: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    raw = inp.get("value_scaling", list, what="a list of z-score objects")
    if len(raw) == 1 and n_bands > 1:
        raw = raw * n_bands  # MLM: a single object broadcasts over all bands
    if len(raw) != n_bands:
        raise inp.fail("value_scaling", f"has {len(raw)} entries for {n_bands} bands")
    mean, std = [], []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise inp.fail(f"value_scaling[{i}]", "must be an object")
        vs = inp.child(f"value_scaling[{i}]", obj)
        kind = vs.get("type", str)
        if kind != "z-score":
            raise vs.fail("type", f"must be 'z-score' (the only scaling groundbreak applies), got {kind!r}")
        m = vs.number("mean")
        s = vs.number("stddev")
        if s <= 0:
            raise vs.fail("stddev", f"must be > 0, got {s}")
        mean.append(m)
        std.append(s)
    return tuple(mean), tuple(std)


def _parse_classes(out: _Fields) -> Tuple[str, ...]:
    raw = out.get("classification:classes", list, what="a list of class objects")
    pairs = []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise out.fail(f"classification:classes[{i}]", "must be an object {value, name}")
        c = out.child(f"classification:classes[{i}]", obj)
        pairs.append((c.get("value", int, what="an integer"), c.get("name", str)))
    values = [v for v, _ in pairs]
    if sorted(values) != list(range(len(values))):
        raise out.fail("classification:classes", f"values must be 0..{len(values) - 1}, got {values}")
    names = [n for _, n in sorted(pairs)]
    if len(set(names)) != len(names) or len(names) < 2:
        raise out.fail("classification:classes", f"needs at least two distinct names, got {names}")
    return tuple(names)


def _parse_dtype_scaling(top: _Fields) -> Mapping[str, Tuple[float, float]]:
    raw = top.get("groundbreak:dtype_scaling", dict, what="an object {dtype: {offset, scale}}")
    if not raw:
        raise top.fail("groundbreak:dtype_scaling", "is empty: declare at least one scene dtype")
    scaling = {}
    for dtype, obj in raw.items():
        if dtype not in KNOWN_DTYPES:
            raise top.fail(
                "groundbreak:dtype_scaling",
                f"has unknown dtype {dtype!r}",
                hint=f"use numpy dtype names: {', '.join(sorted(KNOWN_DTYPES))}",
            )
        if not isinstance(obj, dict):
            raise top.fail(f"groundbreak:dtype_scaling.{dtype}", "must be an object {offset, scale}")
        entry = top.child(f"groundbreak:dtype_scaling.{dtype}", obj)
        offset = entry.number("offset")
        scale = entry.number("scale")
        if scale <= 0:
            raise entry.fail("scale", f"must be > 0, got {scale}")
        scaling[dtype] = (offset, scale)
    return scaling


_VALIDATION_NUMBERS = ("f1", "reference_f1", "max_abs_dscore", "mean_abs_dscore", "max_f1_drop")
_VALIDATION_TEXT = ("reference_runtime", "data", "artifact", "note")


def _parse_runtime_validation(top: _Fields) -> Mapping[str, RuntimeValidation]:
    return _parse_validation(top, "groundbreak:runtime_validation")


def _parse_validation(top: _Fields, field_name: str) -> Mapping[str, RuntimeValidation]:
    raw = top.get(field_name, dict, default={}, what="an object {runtime: record}")
    out = {}
    for runtime, obj in raw.items():
        where = f"{field_name}.{runtime}"
        if runtime not in RUNTIMES:
            raise top.fail(where, "names an unknown runtime", hint=f"runtimes: {', '.join(RUNTIMES)}")
        if not isinstance(obj, dict):
            raise top.fail(where, "must be an object {passed, f1, reference_f1, data, chips, ...}")
        rec = top.child(where, obj)
        kwargs: dict[str, Any] = {"passed": rec.get("passed", bool, what="true or false")}
        for key in _VALIDATION_NUMBERS:
            if obj.get(key) is not None:
                kwargs[key] = rec.number(key)
        for key in _VALIDATION_TEXT:
            kwargs[key] = rec.get(key, str, default="")
        kwargs["reference_runtime"] = kwargs["reference_runtime"] or "eager"
        kwargs["chips"] = rec.get("chips", int, default=0, what="an integer")
        seen = rec.get("seen_in_training", bool, default=None, what="true or false")
        out[runtime] = RuntimeValidation(runtime=runtime, seen_in_training=seen, **kwargs)
    return out


def _parse_artifacts(top: _Fields, root: Path) -> Mapping[str, ModelArtifact]:
    """Declared artifacts; their files' hashes are checked when a runtime loads them, not here."""
    raw = top.get("groundbreak:artifacts", dict, default={}, what="an object {name: artifact}")
    out = {}
    for name, obj in raw.items():
        where = f"groundbreak:artifacts.{name}"
        if name not in ARTIFACTS:
            raise top.fail(where, "is not a known artifact", hint=f"artifacts: {', '.join(ARTIFACTS)}")
        if not isinstance(obj, dict):
            raise top.fail(where, "must be an object {format, xml, bin, xml_sha256, bin_sha256, ...}")
        art = top.child(where, obj)
        fmt = art.get("format", str)
        if fmt != "openvino-ir":
            raise art.fail("format", f"must be 'openvino-ir', got {fmt!r}")
        hashes = {}
        for key in ("xml_sha256", "bin_sha256", "weights_sha256"):
            value = art.get(key, str).lower()
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise art.fail(key, f"must be 64 hex digits, got {_short(value)}")
            hashes[key] = value
        files = {}
        for key in ("xml", "bin"):
            files[key] = art.get(key, str)
            _inside(root, files[key], art, key)
        precision = art.get("precision", str)
        if precision not in ("fp32", "int8"):
            raise art.fail("precision", f"must be 'fp32' or 'int8', got {precision!r}")
        carried = _parse_validation(art, "validation")
        out[name] = ModelArtifact(name=name, xml=files["xml"], bin=files["bin"], precision=precision,
                                  openvino_version=art.get("openvino_version", str, default=""),
                                  calibration=art.get("calibration", dict, default={}), validation=carried, **hashes)
    return out


def _inside(root: Path, name: str, fields: _Fields, key: str = "file") -> Path:
    # A package must not point outside itself (e.g. "../../etc/x"): paths are package-relative.
    candidate = (root / name).resolve()
    if Path(name).is_absolute() or root.resolve() not in candidate.parents:
        raise fields.fail(key, f"must be a file name inside the package directory, got {name!r}")
    return root / name


def _card_summary(card: Path) -> str:
    """First paragraph of the model card after its title ("" when there is no card)."""
    if not card.is_file():
        log.warning("model package %s has no model card (%s)", card.parent, CARD_FILE)
        return ""
    paragraph: list[str] = []
    for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not paragraph):
            if paragraph:
                break
            continue
        if not stripped:
            break
        paragraph.append(stripped)
    return " ".join(paragraph)
