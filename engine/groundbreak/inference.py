"""Batched CPU inference for a model package on one runtime.

``Predictor(package, threads=2, runtime="auto")`` prepares one runtime, and then ``predict(chips,
dtype)`` turns raw chips (N, bands, H, W) into a ``Prediction`` (chip scores and the coarse cell map,
probabilities). Importing this module imports neither torch nor NNCF: a package that carries an
OpenVINO IR (``groundbreak:artifacts``, written by ``groundbreak model quantize``) runs on
``openvino`` alone (``groundbreak.openvino_runtime``); the torch network (``groundbreak.torch_runtime``)
is built only for runtimes that need it.

Runtimes (``groundbreak.names.RUNTIMES``), all fp32 unless the name says otherwise:

- ``eager``: the plain torch module; the reference every other runtime is checked against.
- ``torchscript``: traced + ``torch.jit.freeze`` in channels_last memory format.
- ``torch-int8``: FX graph-mode static int8 quantisation (x86 backend), calibrated at load, frozen.
- ``openvino``: the package's fp32 IR when it has one, else the network converted once
  (``openvino.convert_model``) and stored in the cache as IR, so later processes skip the conversion.
- ``openvino-bf16``: the same IR with the bf16 precision hint (only where the CPU has bf16).
- ``openvino-int8``: the package's int8 IR when it has one (calibrated on real chips and validated
  on held-out labelled chips by ``groundbreak model quantize``), else NNCF int8 calibrated at load on
  ``calibration`` (default: synthetic chips) and stored in the cache.

Validation. A package records per runtime whether it kept the model's accuracy on labelled chips
(``groundbreak:runtime_validation``). A runtime whose record failed is refused, even by name, unless
``force=True``; ``auto`` never chooses it, and chooses an int8 runtime only when its record passed.
An IR from the package is loaded only if its files match the hashes in ``model.json`` and it was made
from the package's weights; a validated IR needs no parity check (so no torch). Every other runtime
must stay within ``tolerance`` (max |Δscore| on a synthetic check batch, default 0.02) of eager fp32:
``auto`` tries ``AUTO_ORDER`` (fastest first, as measured by ``bench/bench_model.py`` on a 2-core
AVX-512 machine) and keeps the first that is installed, builds and passes. Cell-map differences are
measured and reported (``Predictor.parity``) but do not decide: the map is a coarse display aid. The
outcome of a search that needed torch is cached (per weights hash, library versions, candidates,
tolerance and validation records), so only the first process pays for it.

Caches live in the engine's cache folder (``groundbreak.cache``; entry names are hashes): converted
and load-calibrated IR, and OpenVINO's compiled-model cache (``CACHE_DIR``), keyed by the IR hash,
runtime, precision, threads, batch shape and CPU, which makes a warm load a fraction of a second.

``batch_size`` is the forward pass: ``predict`` runs the runtime on at most that many chips at a time
(``InferenceTiming.forward_batch`` and ``forward_passes`` report what ran). Every OpenVINO setting that
could change results is explicit, so the same package, runtime and input give the same scores in
every load and every process (see ``groundbreak.openvino_runtime``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from groundbreak import cache as gbcache
from groundbreak import openvino_runtime as ovr
from groundbreak.errors import DependencyError, GroundbreakError, ModelError, UsageError
from groundbreak.model import ModelArtifact, ModelPackage, RuntimeValidation
from groundbreak.names import AUTO, RUNTIMES, is_int8
from groundbreak.openvino_runtime import Engine, IRFiles, Outputs

log = logging.getLogger(__name__)

# Fastest first, from bench/bench_model.py (resnet18-w32, 2 threads, 3 runs on a loaded machine):
# OpenVINO int8 135-214 chips/s, OpenVINO fp32 28-81, torch int8 35-68, OpenVINO bf16 19-51,
# TorchScript 13-22, eager 13-29 (batch 32). OpenVINO fp32 is exact and needs no calibration, so
# it goes before torch int8 (whose calibration is redone by every process); in practice torch
# int8 is reached only when OpenVINO is not installed.
AUTO_ORDER = ("openvino-int8", "openvino", "torch-int8", "openvino-bf16", "torchscript", "eager")
DEFAULT_TOLERANCE = 0.02
PRECISION = {"openvino-bf16": "bf16", "openvino-int8": "int8", "torch-int8": "int8"}  # else fp32
TORCH_PIP = "pip install torch==2.13.0 (the CPU build)"


@dataclass(frozen=True, slots=True)
class Prediction:
    scores: np.ndarray  # (N,) float32 probability of the positive class per chip
    cells: np.ndarray  # (N, g, g) float32 probability per activity cell


@dataclass(frozen=True, slots=True)
class InferenceTiming:
    """Counters since the predictor was built (or ``reset_timing``), for the run summary."""

    runtime: str
    calls: int
    chips: int
    model_seconds: float  # inside the runtime only
    preprocess_seconds: float  # dtype scaling + normalisation
    setup_seconds: float  # building the runtime (loading, conversion, calibration, parity check)
    forward_batch: int = 0  # the most chips one forward pass may take (the predictor's batch_size)
    forward_passes: int = 0  # forward passes run
    largest_forward: int = 0  # the most chips one pass actually took
    precision: str = "fp32"  # fp32, bf16 or int8

    @property
    def chips_per_second(self) -> float:
        return self.chips / self.model_seconds if self.model_seconds > 0 else 0.0

    @property
    def chips_per_forward(self) -> float:
        """Mean chips per forward pass (the batch the runtime really saw)."""
        return self.chips / self.forward_passes if self.forward_passes else 0.0


@dataclass(frozen=True, slots=True)
class _Built:
    """A prepared runtime: ``checked`` when the package vouches for it (no parity check needed)."""

    engine: Engine
    checked: bool
    uses_torch: bool
    source: str  # "package IR", "cached IR", "torch"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function, float32 out."""
    return np.exp(-np.logaddexp(0.0, -x.astype(np.float32))).astype(np.float32)


def synthetic_inputs(n: int, channels: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Normalised synthetic chips (see ``groundbreak.torch_runtime.synthetic_inputs``; imports torch)."""
    return _torch().synthetic_inputs(n, channels, size, seed=seed)


def set_threads(threads: int) -> None:
    """torch's intra-op and inter-op threads (see ``groundbreak.torch_runtime.set_threads``; imports torch)."""
    _torch().set_threads(threads)


def refusal(package: ModelPackage, runtime: str) -> Optional[RuntimeValidation]:
    """The package's failed validation record for ``runtime``, or None when it may run."""
    record = package.runtime_validation.get(runtime)
    return record if record is not None and not record.passed else None


def validated(package: ModelPackage, runtime: str) -> bool:
    """True when the package records that ``runtime`` passed validation on labelled chips (and the IR
    it runs, if it carries its own record for that runtime, passed too: any failure counts)."""
    record = package.runtime_validation.get(runtime)
    artifact = package.artifact_for(runtime)
    carried = artifact.validation.get(runtime) if artifact is not None else None
    return record is not None and record.passed and (carried is None or carried.passed)


def refused_error(package: ModelPackage, runtime: str, record: RuntimeValidation) -> UsageError:
    return UsageError(
        f"runtime {runtime!r} failed the validation recorded in model {package.model_id}: {record.describe()}"
        + (f" ({record.note})" if record.note else ""),
        hint="use --runtime auto or --runtime openvino, or pass --force-runtime to run it anyway "
        "(its scores are not trustworthy for this model)",
    )


def artifact_files(package: ModelPackage, artifact: ModelArtifact) -> IRFiles:
    """The artifact's files, checked: made from the package's weights and matching their hashes."""
    if artifact.weights_sha256 != package.sha256:
        raise ModelError(
            f"{package.root}: artifact {artifact.name!r} was made from other weights "
            f"(sha256 {artifact.weights_sha256[:12]}, the package's are {package.sha256[:12]})",
            hint="re-create it with `groundbreak model quantize`, or remove it from groundbreak:artifacts",
        )
    ir = IRFiles(package.root / artifact.xml, package.root / artifact.bin, artifact.xml_sha256, artifact.bin_sha256)
    problem = ir.verify()
    if problem:
        raise ModelError(
            f"{package.root}: artifact {artifact.name!r} does not match model.json: {problem}",
            hint="the package was changed or damaged in transit: copy it again (or re-create the artifact "
            "with `groundbreak model quantize`)",
        )
    return ir


class Predictor:
    """A loaded model on one runtime; build once, call ``predict`` per batch (not thread-safe)."""

    def __init__(
        self,
        package: ModelPackage,
        *,
        threads: int = 2,
        runtime: Optional[str] = None,
        batch_size: int = 16,
        tolerance: float = DEFAULT_TOLERANCE,
        calibration: Optional[np.ndarray] = None,
        calibration_size: int = 256,
        cache_dir: "Path | str | None" = None,
        net: Any = None,
        candidates: Sequence[str] = AUTO_ORDER,
        force: bool = False,
        streams: int = 1,
    ) -> None:
        """``runtime`` defaults to the package's ``groundbreak:runtime`` (itself "auto").

        ``batch_size``: chips per forward pass (larger batches are split, never merged).
        ``calibration``: optional preprocessed chips (N, C, H, W) float32 for int8 calibrated at
        load and for the parity check. ``net``: an already built torch network (training code,
        tests); its weights are used as they are, the package's weights and IR are not read.
        ``candidates``: the runtimes ``auto`` may choose, fastest first (eager is always the last
        resort). ``force``: run a runtime named explicitly even when the package records that it
        failed validation. ``cache_dir``: the cache root (default ``groundbreak.cache``'s, which
        honours GROUNDBREAK_CACHE). ``streams``: OpenVINO runtimes compile that many streams sharing
        ``threads`` and accept that many concurrent ``predict`` calls (``self.streams``; torch
        runtimes keep one).
        """
        if threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        runtime = runtime or package.runtime or AUTO
        _check_names([runtime] if runtime != AUTO else [], candidates)
        failed = refusal(package, runtime) if runtime != AUTO else None
        if failed is not None:
            if not force:
                raise refused_error(package, runtime, failed)
            log.warning("runtime %s is forced although it failed validation: %s", runtime, failed.describe())
        t0 = time.perf_counter()
        self.package = package
        self.threads = threads
        self._streams = max(1, min(int(streams), threads))
        self._lock = threading.Lock()  # the counters, when several threads predict at once
        self.batch_size = batch_size
        self.tolerance = tolerance
        self.calibration_size = calibration_size
        self.cache_root = Path(cache_dir) if cache_dir is not None else None
        # Caches and package IR belong to the package's weights: a caller-supplied network has neither.
        self._net = net
        self._cacheable = net is None
        self._calibration = calibration
        self._check: Optional[Tuple[np.ndarray, Outputs]] = None
        #: max |Δscore| and max |Δcell| vs eager on the check batch (0 for eager itself and for a
        #: validated package IR, which is not compared at load).
        self.parity: Tuple[float, float] = (0.0, 0.0)
        self.rejected: dict[str, str] = {}  # runtime -> why auto passed it over
        self.auto_cached = False  # True when auto reused a decision cached by an earlier process
        self.source = ""  # where the runtime came from: "package IR", "cached IR" or "torch"
        if runtime == AUTO:
            usable = tuple(c for c in candidates if c != "eager" and self._may_auto(c)) + ("eager",)
            self.runtime, built = self._choose(usable)
        else:
            self.runtime, built = runtime, self._build(runtime)
            if not built.checked and runtime != "eager":
                self._warn_outside_tolerance(built)
        self._engine, self._uses_torch, self.source = built.engine, built.uses_torch, built.source
        self._setup_seconds = time.perf_counter() - t0
        self.reset_timing()
        log.info(
            "model %s on runtime %s from %s (%d threads, forward batch %d, parity %.4f/%.4f, setup %.2f s)",
            package.model_id, self.runtime, self.source, threads, batch_size, *self.parity, self._setup_seconds,
        )

    # -- public --------------------------------------------------------------------------------------

    def predict(self, chips: np.ndarray, dtype: Optional[str] = None) -> Prediction:
        """Raw chips (N, bands, H, W) in the scene dtype, bands in the model's order -> Prediction."""
        chips = np.asarray(chips)
        self.package.check_chips(chips)
        t0 = time.perf_counter()
        x = self.package.preprocess(chips, dtype if dtype is not None else chips.dtype.name)
        self._preprocess_seconds += time.perf_counter() - t0
        return self.predict_normalised(x)

    def predict_normalised(self, x: np.ndarray) -> Prediction:
        """Already preprocessed float32 chips -> Prediction (benchmarks, calibration, training)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.package.check_chips(x)
        n, g = x.shape[0], x.shape[2] // (self.package.chip_size // self.package.cell_grid)
        if n == 0:
            return Prediction(np.zeros(0, np.float32), np.zeros((0, g, g), np.float32))
        if self._uses_torch:
            set_threads(self.threads)  # torch's thread count is per calling thread
        t0 = time.perf_counter()
        logits, cells = self._run(self._engine, x, count=True)
        with self._lock:
            self._model_seconds += time.perf_counter() - t0
            self._calls += 1
            self._chips += n
        return Prediction(sigmoid(logits), sigmoid(cells))

    @property
    def streams(self) -> int:
        """How many ``predict`` calls may run at once (OpenVINO streams; 1 for torch runtimes)."""
        return int(getattr(self._engine, "streams", 1))

    @property
    def forward_batch(self) -> int:
        """The most chips one forward pass takes (``batch_size``)."""
        return self.batch_size

    @property
    def from_cache(self) -> bool:
        """True when OpenVINO's compiled-model cache supplied the runtime (a warm load)."""
        return bool(getattr(self._engine, "from_cache", False))

    @property
    def precision(self) -> str:
        return PRECISION.get(self.runtime, "fp32")

    @property
    def net(self) -> Any:
        """The torch network (built on first use: this is what imports torch)."""
        if self._net is None:
            self._net = _torch().load_network(self.package)
        return self._net

    @property
    def timing(self) -> InferenceTiming:
        return InferenceTiming(
            runtime=self.runtime,
            calls=self._calls,
            chips=self._chips,
            model_seconds=self._model_seconds,
            preprocess_seconds=self._preprocess_seconds,
            setup_seconds=self._setup_seconds,
            forward_batch=self.batch_size,
            forward_passes=self._passes,
            largest_forward=self._largest,
            precision=self.precision,
        )

    def reset_timing(self) -> None:
        self._calls = 0
        self._chips = 0
        self._passes = 0
        self._largest = 0
        self._model_seconds = 0.0
        self._preprocess_seconds = 0.0

    # -- choosing a runtime ----------------------------------------------------------------------------

    def _may_auto(self, runtime: str) -> bool:
        """Whether ``auto`` may consider ``runtime`` for this package (see the module docs)."""
        failed = refusal(self.package, runtime)
        if failed is not None:
            self.rejected[runtime] = f"failed validation: {failed.describe()}"
            return False
        if is_int8(runtime) and not validated(self.package, runtime):
            self.rejected[runtime] = "int8 without a passing validation record in the package"
            return False
        record = self.package.runtime_validation.get(runtime)
        if record is not None and record.artifact and record.artifact not in self.package.artifacts:
            self.rejected[runtime] = f"validated with artifact {record.artifact!r}, which the package lacks"
            return False
        return True

    def _choose(self, candidates: Tuple[str, ...]) -> Tuple[str, _Built]:
        # Runtimes on the package's own IR are cheap to build and need no torch: try them in order
        # until the first runtime that needs torch, whose search (builds, calibrations, parity
        # checks: tens of seconds for a full-size model) is cached for later processes.
        for i, name in enumerate(candidates):
            if not self._cacheable or self.package.artifact_for(name) is None:
                return self._search_cached(candidates[i:])
            try:
                built = self._build(name)
            except (GroundbreakError, RuntimeError, OSError) as exc:
                self.rejected[name] = str(exc)
                log.warning("runtime %s passed over: %s", name, exc)
                continue
            if built.checked or self._within_tolerance(name, built):
                return name, built
        raise AssertionError("unreachable: eager is always the last candidate")

    def _search_cached(self, candidates: Tuple[str, ...]) -> Tuple[str, _Built]:
        if not self._cacheable:
            return self._search(candidates)
        decision = self._decision_path(candidates)
        cached = _read_json(decision).get("runtime")
        if cached in candidates:
            try:
                built = self._build(cached)
                if built.checked or self._within_tolerance(cached, built):
                    self.auto_cached = True
                    return cached, built
            except Exception as exc:
                log.info("cached runtime choice %s no longer usable (%s); choosing again", cached, exc)
        name, built = self._search(candidates)
        _write_json(decision, {"runtime": name, "parity": self.parity, "rejected": self.rejected})
        return name, built

    def _search(self, candidates: Tuple[str, ...]) -> Tuple[str, _Built]:
        for name in candidates:
            try:
                built = self._build(name)
            except DependencyError as exc:
                if name == "eager":
                    raise
                self.rejected[name] = f"not installed ({exc.hint})"
                continue
            except Exception as exc:  # a runtime that fails to build must not stop the run
                if name == "eager":
                    raise
                log.warning("runtime %s failed to build, trying the next: %s", name, exc)
                self.rejected[name] = f"failed to build: {exc}"
                continue
            if name == "eager" or built.checked or self._within_tolerance(name, built):
                return name, built
        raise AssertionError("unreachable: eager is always the last candidate")

    def _within_tolerance(self, name: str, built: _Built) -> bool:
        ds, dc = self._parity(built.engine)
        if ds <= self.tolerance:
            self.parity = (ds, dc)
            return True
        self.rejected[name] = f"outside tolerance: max |dscore| {ds:.4f}, max |dcell| {dc:.4f}"
        log.info("runtime %s rejected: %s", name, self.rejected[name])
        return False

    def _warn_outside_tolerance(self, built: _Built) -> None:
        self.parity = self._parity(built.engine)
        if self.parity[0] > self.tolerance:
            log.warning(
                "runtime %s moves scores by up to %.3f from eager fp32 (tolerance %.3f); "
                "runtime 'auto' would not have chosen it for this model",
                self.runtime, self.parity[0], self.tolerance,
            )

    def _decision_path(self, candidates: Tuple[str, ...]) -> Path:
        versions = [ovr.library_version(d) for d in ("torch", "openvino", "nncf")]
        validation = sorted((k, v.passed) for k, v in self.package.runtime_validation.items())
        parts = [self.package.sha256, self.package.architecture, *versions, repr(self.tolerance),
                 ",".join(candidates), str(self.calibration_size), self._calibration_digest(),
                 repr(validation)]  # fmt: skip
        return self._cache_entry("auto", gbcache.digest(parts), ".json")

    # -- building one runtime --------------------------------------------------------------------------

    def _build(self, name: str) -> _Built:
        if name in ("eager", "torchscript", "torch-int8"):
            tr = _torch()
            example = tr.example_input(self.package, min(self.batch_size, 4))
            if name == "eager":
                engine = tr.eager_engine(self.net)
            elif name == "torchscript":
                engine = tr.torchscript_engine(self.net, example)
            else:
                cal = self._inputs(self.calibration_size, seed=0)
                engine = tr.torch_int8_engine(self.net, example, cal, self.batch_size)
            return _Built(engine, checked=False, uses_torch=True, source="torch")
        if name in ("openvino", "openvino-bf16", "openvino-int8"):
            return self._build_openvino(name)
        raise UsageError(f"unknown inference runtime {name!r}", hint=f"choose one of: {AUTO}, {', '.join(RUNTIMES)}")

    def _build_openvino(self, name: str) -> _Built:
        ov = ovr.import_openvino(name)
        precision = {"openvino-bf16": "bf16"}.get(name, "f32")  # an int8 IR runs its fp32 parts in fp32
        if name == "openvino-bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise DependencyError(
                "runtime 'openvino-bf16' needs a CPU with bf16 support (AVX-512 BF16 or AMX)",
                hint="use runtime 'openvino' (fp32) or 'openvino-int8' on this machine",
            )
        artifact = self.package.artifact_for(name) if self._cacheable else None
        if artifact is not None:
            ir = artifact_files(self.package, artifact)
            # The fp32 IR is the network itself; bf16 or int8 is vouched for only by a passing record.
            checked = name == "openvino" or validated(self.package, name)
            return _Built(self._compile(ir, name, precision), checked, uses_torch=False, source="package IR")
        cached = self._cached_ir(name)
        if cached is None:  # no writable cache: compile the in-memory model
            model = self._convert() if name != "openvino-int8" else self._quantise_at_load()
            return _Built(ovr.compile_model(model, self.threads, precision, streams=self._streams), False, False,
                          "torch")
        return _Built(self._compile(cached, name, precision), checked=False, uses_torch=False, source="cached IR")

    def _compile(self, ir: IRFiles, name: str, precision: str) -> Engine:
        """Compile an IR file with OpenVINO's model cache: a warm load skips the compilation."""
        p = self.package
        parts = [ir.sha256, name, precision, self.threads, f"batch:?x{len(p.bands)}x{p.chip_size}x{p.chip_size}",
                 ovr.cpu_signature(), ovr.library_version("openvino")]  # fmt: skip
        if self._streams > 1:
            parts.append(f"streams:{self._streams}")
        blobs = self._cache_entry("openvino", "compiled-" + gbcache.digest(parts), "")
        try:
            return ovr.compile_model(ir.xml, self.threads, precision, cache_dir=blobs, streams=self._streams)
        except OSError as exc:  # an unwritable cache folder costs a compilation, never the run
            log.warning("OpenVINO model cache %s unusable (%s); compiling without it", blobs, exc)
            return ovr.compile_model(ir.xml, self.threads, precision, streams=self._streams)

    def _cached_ir(self, name: str) -> Optional[IRFiles]:
        """The network as IR from the cache: converted (fp32) or calibrated at load (int8), made once."""
        if not self._cacheable:
            return None
        versions = [ovr.library_version(d) for d in ("torch", "openvino", "nncf")]
        if name == "openvino-int8":
            # "int8-2": the calibration method (histogram ranges, mixed preset); bump when it changes.
            parts = [self.package.sha256, self.package.architecture, *versions, "int8-2", self.calibration_size,
                     self._calibration_digest()]  # fmt: skip
            folder = self._cache_entry("openvino-int8", gbcache.digest(parts), "")
        else:
            parts = [self.package.sha256, self.package.architecture, *versions, "fp32"]
            folder = self._cache_entry("openvino", "ir-" + gbcache.digest(parts), "")
        stored = ovr.read_entry(folder)
        if stored is not None:
            return stored
        model = self._quantise_at_load() if name == "openvino-int8" else self._convert()
        try:
            # Every process, this one too, compiles the stored entry: they all run the same model.
            return ovr.write_entry(folder, model, extra={"parts": [str(p) for p in parts]})
        except OSError as exc:  # a read-only cache costs a conversion per process, never the run
            log.warning("could not cache the OpenVINO IR in %s: %s", folder.parent, exc)
            return None

    def _convert(self) -> Any:
        t0 = time.perf_counter()
        model = _torch().to_openvino(self.net, self.package)
        log.info("converted %s to OpenVINO in %.1f s", self.package.model_id, time.perf_counter() - t0)
        return model

    def _quantise_at_load(self) -> Any:
        return _torch().quantize_openvino(self._convert(), self._inputs(self.calibration_size, seed=0))

    # -- the parity check and its inputs ---------------------------------------------------------------

    def _run(self, engine: Engine, x: np.ndarray, *, count: bool = False) -> Outputs:
        step = self.batch_size
        outs = [engine(x[i : i + step]) for i in range(0, x.shape[0], step)]
        if count:
            with self._lock:
                self._passes += len(outs)
                self._largest = max(self._largest, min(step, x.shape[0]))
        if len(outs) == 1:
            return outs[0]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def _inputs(self, n: int, seed: int) -> np.ndarray:
        if self._calibration is not None:
            cal = np.ascontiguousarray(self._calibration, dtype=np.float32)
            self.package.check_chips(cal)
            return cal[:n] if seed == 0 else cal[-n:]
        return synthetic_inputs(n, len(self.package.bands), self.package.chip_size, seed=seed)

    def _parity(self, engine: Engine) -> Tuple[float, float]:
        if self._check is None:
            x = self._inputs(min(16, self.calibration_size), seed=12345)
            self._check = (x, self._run(_torch().eager_engine(self.net), x))
        x, (ref_s, ref_c) = self._check
        s, c = self._run(engine, x)
        return (
            float(np.max(np.abs(sigmoid(s) - sigmoid(ref_s)))),
            float(np.max(np.abs(sigmoid(c) - sigmoid(ref_c)))),
        )

    def _calibration_digest(self) -> str:
        if self._calibration is None:
            return "synthetic"
        return hashlib.sha256(np.ascontiguousarray(self._calibration[:64]).tobytes()).hexdigest()[:12]

    def _cache_entry(self, kind: str, key: str, suffix: str) -> Path:
        """A cache path named by a hash only (``cache_dir`` overrides the root, as in tests)."""
        if self.cache_root is None:
            return gbcache.entry(kind, key, suffix)
        gbcache.check_safe_name(key, what="cache key", where="the engine")
        return self.cache_root / kind / (key + suffix)


def start_predictor(package: ModelPackage, **kwargs: Any) -> "concurrent.futures.Future[Predictor]":
    """Build a ``Predictor(package, **kwargs)`` in a background thread and return its future.

    A run can then read and screen its first chips while the model loads, and call ``.result()``
    when the first batch is ready (which re-raises any error the build raised, e.g. a refused
    runtime). The thread is a daemon: an abandoned future does not keep the process alive.
    """
    future: "concurrent.futures.Future[Predictor]" = concurrent.futures.Future()

    def build() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(Predictor(package, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)

    import threading

    threading.Thread(target=build, name="groundbreak-model-load", daemon=True).start()
    return future


def _check_names(runtimes: Sequence[str], candidates: Sequence[str]) -> None:
    bad = [r for r in [*runtimes, *candidates] if r not in RUNTIMES]
    if bad:
        raise UsageError(
            f"unknown inference runtime {bad[0]!r}" if len(bad) == 1 else f"unknown inference runtimes {bad}",
            hint=f"choose one of: {AUTO}, {', '.join(RUNTIMES)}",
        )


def _torch() -> Any:
    """``groundbreak.torch_runtime``, imported on first need (it imports torch)."""
    try:
        from groundbreak import torch_runtime
    except ImportError as exc:
        raise DependencyError(
            f"this runtime needs torch, which cannot be imported ({exc})",
            hint=f"{TORCH_PIP}; or use a model package with an OpenVINO IR (groundbreak model quantize) "
            "and runtime 'openvino' or 'openvino-int8'",
        ) from None
    return torch_runtime


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs time
        log.warning("could not write %s: %s", path, exc)


def load_predictor(path: "str | Path | None" = None, **kwargs: Any) -> Predictor:
    """Convenience: ``Predictor(load_model_package(path), **kwargs)``."""
    from groundbreak.model import load_model_package

    return Predictor(load_model_package(path), **kwargs)


__all__ = [
    "AUTO_ORDER",
    "DEFAULT_TOLERANCE",
    "InferenceTiming",
    "Prediction",
    "Predictor",
    "RUNTIMES",
    "artifact_files",
    "load_predictor",
    "refusal",
    "set_threads",
    "sigmoid",
    "start_predictor",
    "synthetic_inputs",
    "validated",
]
