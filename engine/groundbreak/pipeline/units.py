"""Self-contained work units: what any executor ships to a worker, and the function it calls.

A ``UnitTask`` carries everything a worker needs to process one block of chips of one scene —
the scene description, the chip grid, the band mapping, the chip list, the drop rule, a reference to
the model package (path and hashes) and the runtime settings — and nothing that only means something
inside a ``Plan``. It is a frozen value of plain data, so it pickles to another process or machine.
``run_unit(task)`` reads, screens and infers the unit there (pixels never travel), and returns the
unit's chip and detection records.

A chip is far too small to be a task (0.2–1 ms of scheduler overhead each); a unit is a block of up
to 16 × 16 chips of one scene (``grid.DEFAULT_BLOCK_CHIPS``), deduplicated across overlapping AOIs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..errors import DependencyError, ModelError
from ..grid import ChipGrid
from ..masks import DropRule
from ..model import MODEL_JSON, ModelPackage, load_model_package
from ..plan import ChipRef, Plan
from ..scene import Scene
from ..store import ChipRecord, DetectionRecord
from ..view import SceneView
from .stages import Predictor, ReadyChip, Screened, extract, infer, prepare, screen

log = logging.getLogger(__name__)


def package_digest(model: ModelPackage) -> str:
    """A hash of the whole model package as it decides results: model.json (threshold, scaling,
    normalisation, bands, artifacts and their hashes) and the weights' hash."""
    digest = hashlib.sha256(model.sha256.encode())
    try:
        digest.update((Path(model.root) / MODEL_JSON).read_bytes())
    except OSError as exc:
        raise ModelError("cannot read %s: %s" % (Path(model.root) / MODEL_JSON, exc),
                         hint="check the model package folder is complete and readable") from None
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where a worker finds the model package, and the hashes it must have there."""

    root: str
    sha256: str  # of the weights
    digest: str  # ``package_digest``: the whole package

    @classmethod
    def of(cls, model: ModelPackage) -> "ModelRef":
        return cls(root=str(model.root), sha256=model.sha256, digest=package_digest(model))

    def load(self) -> ModelPackage:
        """The package, hash-checked once per process while its files are unchanged (a worker runs many
        units: re-hashing large weights for each would cost more than some units)."""
        stamp = _files_stamp(Path(self.root))
        key = (self.root, self.sha256, self.digest)
        with _models_lock:
            cached = _models.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        model = load_model_package(self.root)
        if model.sha256 != self.sha256 or package_digest(model) != self.digest:
            raise ModelError(
                "the model package at %s is not the one this run was planned with (its files changed)" % self.root,
                hint="give every worker the same package (same model.json and weights), or plan the run again",
            )
        with _models_lock:
            _models[key] = (stamp, model)
        return model


_models: Dict[Tuple[str, str, str], Tuple[Tuple[Tuple[str, int, int], ...], ModelPackage]] = {}
_models_lock = threading.Lock()


def _files_stamp(root: Path) -> Tuple[Tuple[str, int, int], ...]:
    """(name, size, mtime) of every file of a package folder: any change means hashing again."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file()))
    except OSError:
        return ()


@dataclass(frozen=True, slots=True)
class UnitTask:
    """One block of chips of one scene, with everything needed to process it anywhere."""

    unit_id: str
    scene: Scene
    grid: ChipGrid
    band_indexes: Tuple[int, ...]
    chips: Tuple[ChipRef, ...]
    rule: DropRule
    model: ModelRef
    runtime: Optional[str] = None  # None: the package's choice
    batch_size: int = 32
    threads: int = 2
    readers: int = 1
    force_runtime: bool = False


@dataclass(frozen=True)
class UnitResult:
    """What a unit produced: one record per chip, its detections, and where the time went."""

    unit_id: str
    chips: Tuple[ChipRecord, ...]
    detections: Tuple[DetectionRecord, ...]
    runtime: str
    timings: Dict[str, float] = field(default_factory=dict)


def unit_tasks(plan: Plan, model: ModelPackage, *, rule: DropRule, runtime: Optional[str] = None,
               batch_size: int = 32, threads: int = 2, readers: int = 1, force_runtime: bool = False,
               done: Set[Tuple[str, str]] = frozenset()) -> List[UnitTask]:  # type: ignore[assignment]
    """The plan's units as self-contained tasks, without the chips already ``done`` ((scene, chip) pairs)."""
    if not plan.fits:
        raise ValueError("the plan has no scene fits: make it with plan.plan_inputs")
    ref = ModelRef.of(model)
    tasks = []
    for unit in plan.units:
        scene = plan.scenes[unit.scene_index]
        pending = tuple(c for c in unit.chips if (scene.scene_id, c.chip_id) not in done)
        if pending:
            tasks.append(UnitTask(
                unit_id=unit.unit_id, scene=scene, grid=plan.grid,
                band_indexes=plan.fits[unit.scene_index].band_indexes, chips=pending, rule=rule, model=ref,
                runtime=runtime, batch_size=batch_size, threads=threads, readers=readers,
                force_runtime=force_runtime,
            ))
    return tasks


class ViewPool:
    """One SceneView per thread: GDAL dataset handles must not be shared between threads. Each
    thread keeps only its current scene open."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: List[SceneView] = []

    def get(self, task: UnitTask) -> SceneView:
        key = (task.scene.scene_id, task.scene.path, task.band_indexes, task.grid)
        current = getattr(self._local, "current", None)
        if current is not None and current[0] == key:
            return current[1]
        if current is not None:
            current[1].close()
            with self._lock:
                self._open.remove(current[1])
        view = SceneView(task.scene, task.grid, task.band_indexes)
        self._local.current = (key, view)
        with self._lock:
            self._open.append(view)
        return view

    def close(self) -> None:
        with self._lock:
            for view in self._open:
                view.close()
            self._open.clear()


def read_unit(task: UnitTask, views: ViewPool, pool: Optional[ThreadPoolExecutor] = None, *,
              timings: Optional[Dict[str, float]] = None, model: Optional[ModelPackage] = None,
              stopped: Callable[[], bool] = lambda: False) -> Iterator[Screened]:
    """Screen then extract one unit's chips, in the unit's order (deterministic whatever ``pool``).

    Prefilter drops come first; then each kept chip's exact decision. At most a bounded chunk of
    chips is in flight, so memory stays flat with unit size. With ``model``, ready chips are also
    prepared for it here (on the reader threads), so inference only runs the network."""
    timings = timings if timings is not None else {}
    t = time.perf_counter()
    dropped, keep = screen(views.get(task), task.chips, scene=task.scene, grid=task.grid, rule=task.rule,
                           unit_id=task.unit_id)
    timings["screen_s"] = timings.get("screen_s", 0.0) + time.perf_counter() - t
    yield from dropped

    def one(ref: ChipRef) -> Screened:
        t0 = time.perf_counter()
        item = extract(views.get(task), ref, scene=task.scene, grid=task.grid, rule=task.rule, unit_id=task.unit_id)
        if model is not None and isinstance(item, ReadyChip):
            item = prepare(model, item)
        timings["read_s"] = timings.get("read_s", 0.0) + time.perf_counter() - t0  # summed over readers
        return item

    chunk = max(8, 2 * task.batch_size)
    for start in range(0, len(keep), chunk):
        if stopped():
            return
        part = keep[start:start + chunk]
        yield from (pool.map(one, part) if pool is not None else map(one, part))


# -- the model, once per process ------------------------------------------------------------------
_predictors: Dict[Tuple[object, ...], Predictor] = {}
_predictors_lock = threading.Lock()


def shared_predictor(model: ModelPackage, *, runtime: Optional[str], threads: int, batch_size: int,
                     force_runtime: bool = False, streams: int = 1) -> Predictor:
    """The process's predictor for this package and settings, built on first use: a fleet worker
    loads the model once, not once per unit."""
    key = (package_digest(model), runtime, threads, batch_size, force_runtime, streams)
    with _predictors_lock:
        found = _predictors.get(key)
        if found is None:
            found = _predictors[key] = build_predictor(model, runtime=runtime, threads=threads,
                                                       batch_size=batch_size, force_runtime=force_runtime,
                                                       streams=streams)
        return found


def build_predictor(model: ModelPackage, *, runtime: Optional[str], threads: int, batch_size: int,
                    force_runtime: bool = False, streams: int = 1) -> Predictor:
    try:
        from ..inference import Predictor as _Predictor  # the runtime (torch only if the package needs it)
    except ImportError as exc:
        raise DependencyError(
            "cannot load the inference runtime: %s" % exc,
            hint="install the CPU build of torch into the engine's environment: pip install torch==2.13.0 "
                 "(or re-run scripts/setup_engine.sh / the plugin's Set up engine)",
        ) from None
    kwargs: Dict[str, object] = {"threads": threads, "runtime": runtime, "batch_size": batch_size}
    if streams > 1:
        kwargs["streams"] = streams
    if force_runtime:
        kwargs["force"] = True
    return _Predictor(model, **kwargs)  # type: ignore[arg-type]


def run_unit(task: UnitTask, predictor: Optional[Predictor] = None) -> UnitResult:
    """Read, screen and infer one unit where it runs; the function a fleet worker calls."""
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    model = task.model.load()
    if predictor is None:
        predictor = shared_predictor(model, runtime=task.runtime, threads=task.threads,
                                     batch_size=task.batch_size, force_runtime=task.force_runtime)
    timings["model_load_s"] = time.perf_counter() - t0
    views = ViewPool()
    pool = ThreadPoolExecutor(task.readers, thread_name_prefix="groundbreak-read") if task.readers > 1 else None
    chips: List[ChipRecord] = []
    detections: List[DetectionRecord] = []
    batch: List[ReadyChip] = []

    def flush() -> None:
        t = time.perf_counter()
        out = infer(predictor, model, batch, task.grid)
        timings["infer_s"] = timings.get("infer_s", 0.0) + time.perf_counter() - t
        chips.extend(out.chips)
        detections.extend(out.detections)
        batch.clear()

    try:
        for item in read_unit(task, views, pool, timings=timings, model=model):
            if isinstance(item, ReadyChip):
                batch.append(item)
                if len(batch) >= task.batch_size:
                    flush()
            else:
                chips.append(item)
        flush()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        views.close()
    timings["unit_s"] = time.perf_counter() - t0
    order = {c.chip_id: i for i, c in enumerate(task.chips)}
    chips.sort(key=lambda c: order[c.chip_id])
    return UnitResult(task.unit_id, tuple(chips), tuple(detections), predictor.runtime, timings)
