"""The run: plan → screen → extract → infer → write, in self-contained work units.

``options`` (what a run is asked and what it reports), ``stages`` (the stage functions),
``units`` (``UnitTask`` and ``run_unit``, what any executor ships to a worker), ``provenance``
(the resume fingerprint and the ``runs`` row) and ``local`` (the in-process threaded runner).
"""

from .local import run_detection
from .options import RunOptions, RunResult, RunStats, RunStatus
from .stages import ReadyChip, activity_footprint, extract, infer, screen
from .units import ModelRef, UnitResult, UnitTask, package_digest, run_unit, unit_tasks

__all__ = [
    "ModelRef", "ReadyChip", "RunOptions", "RunResult", "RunStats", "RunStatus", "UnitResult", "UnitTask",
    "activity_footprint", "extract", "infer", "package_digest", "run_detection", "run_unit", "screen", "unit_tasks",
]
