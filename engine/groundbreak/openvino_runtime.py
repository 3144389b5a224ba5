"""OpenVINO IR on the CPU without torch: storing IR entries, compiling them, running them.

This module imports neither torch nor NNCF (``openvino`` itself only when a model is compiled), so a
package that carries an OpenVINO IR runs with ``import openvino`` alone. ``groundbreak.inference``
builds on it; so does ``groundbreak.quantize``, which writes the package artifacts.

Determinism. The same IR, input and settings must give bit-identical scores in every load and every
process. Everything that may change how the CPU plugin computes is set explicitly rather than left to
per-machine defaults (``compile_config``): the inference precision (this CPU's default is bf16, not
f32), threads, one stream, the TBB partitioner (``STATIC``: the plugin otherwise picks ``AUTO`` for
some models, whose dynamic work split reorders float reductions), and denormal handling (off, so an
inference thread does not inherit flush-to-zero from whatever ran on it before). IR entries are
written to a temporary folder and renamed into place whole, with the sha256 of both files in a
manifest: a reader never pairs an ``.xml`` with another writer's ``.bin``, and a damaged entry is
detected instead of silently compiled. A process that has just written an entry compiles it from
disk like every later process does, so no process ever runs a model that differs from the stored one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import queue
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from groundbreak.errors import DependencyError, ModelError

log = logging.getLogger(__name__)

XML = "model.xml"
BIN = "model.bin"
MANIFEST = "manifest.json"
PIP = "pip install 'openvino>=2024.0'"

Outputs = Tuple[np.ndarray, np.ndarray]
Engine = Callable[[np.ndarray], Outputs]


@dataclass(frozen=True, slots=True)
class IRFiles:
    """One OpenVINO IR (an ``.xml`` graph and its ``.bin`` weights) and the sha256 of each file."""

    xml: Path
    bin: Path
    xml_sha256: str
    bin_sha256: str

    @property
    def sha256(self) -> str:
        """One hash for the pair (what cache keys and provenance record)."""
        return hashlib.sha256((self.xml_sha256 + self.bin_sha256).encode()).hexdigest()

    def verify(self) -> Optional[str]:
        """None when both files exist and match their hashes, else what is wrong."""
        for path, expected in ((self.xml, self.xml_sha256), (self.bin, self.bin_sha256)):
            if not path.is_file():
                return f"{path} is missing"
            actual = file_sha256(path)
            if actual != expected:
                return f"{path} has sha256 {actual}, expected {expected}"
        return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def block_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry out of every engine process.

    Without a consent file, ``import openvino`` sends an event to Google Analytics from a forked
    ``multiprocessing`` child (openvino_telemetry's GA4 backend). Besides calling out from analysts'
    and fleet machines, that fork deadlocks in a threaded process: the child closes ``sys.stdin``
    while our stdin watcher holds its lock, and the run then hangs at exit joining the child (seen
    with ``run --events jsonl``, the plugin's command). Both libraries fall back to a no-op stub when
    ``openvino_telemetry`` cannot be imported, so it is made unimportable before either loads.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import raises ImportError


def import_openvino(runtime: str = "openvino") -> Any:
    block_telemetry()
    try:
        import openvino
    except ImportError:
        raise DependencyError(
            f"inference runtime {runtime!r} needs the Python package 'openvino', which is not installed",
            hint=f"{PIP} (into the engine's virtualenv), or choose runtime 'torchscript' or 'eager'",
        ) from None
    return openvino


def library_version(distribution: str) -> str:
    """A distribution's version without importing it (importing NNCF alone takes ~1.7 s); "-" if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def cpu_signature() -> str:
    """What identifies this CPU for compiled-model caches: model name and instruction-set flags."""
    name, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags":
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()}|{name}|{flags}".encode()).hexdigest()[:16]


def compile_config(threads: int, precision: str, *, cache_dir: Optional[Path] = None,
                   streams: int = 1) -> Dict[str, Any]:
    """CPU plugin settings, every one that can change results set explicitly (see the module docs).

    ``streams`` > 1 splits the ``threads`` between that many concurrent infer requests (throughput
    mode: one batch per stream, no synchronisation across threads inside a forward pass)."""
    config: Dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
        "EXECUTION_MODE_HINT": "PERFORMANCE",
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "NUM_STREAMS": streams,
        "TBB_PARTITIONER": "STATIC",
        "CPU_DENORMALS_OPTIMIZATION": False,
        # OpenVINO pins threads to cores by default: two single-thread processes then share core 0.
        "ENABLE_CPU_PINNING": threads >= (os.cpu_count() or 1),
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def compile_model(model: Any, threads: int, precision: str, *, cache_dir: Optional[Path] = None,
                  streams: int = 1) -> "CompiledEngine":
    """Compile an ``openvino.Model`` or an IR path for the CPU; returns ``run(x) -> (chip, cells)``.

    With ``cache_dir`` (and a path), OpenVINO's model cache stores the compiled blob there: a later
    compile of the same IR with the same settings on the same CPU loads it instead of compiling.
    """
    ov = import_openvino()
    core = ov.Core()
    config = compile_config(threads, precision, cache_dir=cache_dir, streams=streams)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    source = str(model) if isinstance(model, Path) else model
    return CompiledEngine(core.compile_model(source, "CPU", config), streams)


class CompiledEngine:
    """A compiled model and one infer request per stream: ``engine(x) -> (chip logits, cell logits)``;
    safe to call from as many threads at once as it has streams."""

    def __init__(self, compiled: Any, streams: int = 1) -> None:
        self.streams = streams
        self._requests: "queue.Queue[Any]" = queue.Queue()
        for _ in range(streams):
            self._requests.put(compiled.create_infer_request())
        self._chip, self._cells = compiled.outputs[0], compiled.outputs[1]
        try:
            #: True when OpenVINO's model cache supplied the compiled model (a warm load).
            self.from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except RuntimeError:
            self.from_cache = False

    def __call__(self, x: np.ndarray) -> Outputs:
        request = self._requests.get()
        try:
            res = request.infer({0: x})
            return np.array(res[self._chip], np.float32), np.array(res[self._cells], np.float32)
        finally:
            self._requests.put(request)


# -- IR entries: a folder with model.xml, model.bin and their hashes ------------------------------------


def read_entry(folder: Path) -> Optional[IRFiles]:
    """The IR stored in ``folder`` if its manifest and both files are intact, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        ir = IRFiles(folder / XML, folder / BIN, str(manifest["xml_sha256"]), str(manifest["bin_sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    problem = ir.verify()
    if problem:
        log.warning("ignoring damaged OpenVINO IR entry %s: %s", folder, problem)
        return None
    return ir


def write_entry(folder: Path, model: Any, *, extra: Optional[Mapping[str, Any]] = None) -> IRFiles:
    """Save ``model`` (an ``openvino.Model``) as an IR entry in ``folder``, atomically.

    The files are written into a sibling temporary folder and renamed into place in one step. If
    another writer got there first, its entry is kept (and returned) and ours is discarded, so every
    process ends up with the same stored model.
    """
    ov = import_openvino()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / XML), compress_to_fp16=False)
        doc = {"xml_sha256": file_sha256(tmp / XML), "bin_sha256": file_sha256(tmp / BIN), **(extra or {})}
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            existing = read_entry(folder)
            if existing is not None:
                return existing
            shutil.rmtree(folder, ignore_errors=True)  # a damaged entry: replace it
            os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ir = read_entry(folder)
    if ir is None:
        raise ModelError(f"the OpenVINO IR just written to {folder} does not read back",
                         hint="check the free space and permissions of the cache folder", retryable=True)
    return ir


__all__ = [
    "BIN",
    "CompiledEngine",
    "Engine",
    "IRFiles",
    "MANIFEST",
    "XML",
    "compile_config",
    "compile_model",
    "cpu_signature",
    "file_sha256",
    "block_telemetry",
    "import_openvino",
    "library_version",
    "read_entry",
    "write_entry",
]
