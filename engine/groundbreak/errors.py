"""One error hierarchy for the whole engine.

Every error carries a stable ``code`` (also sent in protocol ``error`` events), a message that
says what went wrong and where, a ``hint`` that says how to fix it, and whether retrying could help.
Subclasses also inherit the matching builtin so callers can catch ``OSError``/``ValueError``.
"""

from __future__ import annotations


class GroundbreakError(Exception):
    """Base class: ``str(err)`` is the message; ``err.hint`` says how to fix it."""

    code = "groundbreak_error"
    exit_code = 1
    retryable = False

    def __init__(self, message: str, *, hint: str = "", retryable: bool | None = None,
                 problems: tuple[dict[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: Every problem found when several were checked at once (each: code, message, hint, …).
        self.problems = problems
        if retryable is not None:
            self.retryable = retryable

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
        }
        if self.problems:
            out["problems"] = [dict(p) for p in self.problems]
        return out


class UsageError(GroundbreakError, ValueError):
    code = "usage"
    exit_code = 2


class MissingFileError(GroundbreakError, FileNotFoundError):
    code = "file_missing"


class CorruptFileError(GroundbreakError, OSError):
    code = "file_corrupt"


class InvalidGeometryError(GroundbreakError, ValueError):
    code = "aoi_invalid"


class BandMismatchError(GroundbreakError, ValueError):
    code = "band_mismatch"


class ResolutionError(GroundbreakError, ValueError):
    """A scene's ground resolution is too far from the model's to be used without resampling."""

    code = "resolution_mismatch"


class ScenesUnusableError(GroundbreakError, ValueError):
    """Several problems with the scenes at once (``problems`` lists them)."""

    code = "scenes_unusable"


class InternalError(GroundbreakError, RuntimeError):
    """An unexpected exception: a bug, reported as an error event like any other failure."""

    code = "internal"


class CRSMismatchError(GroundbreakError, ValueError):
    code = "crs_mismatch"


class NoOverlapError(GroundbreakError, ValueError):
    code = "aoi_outside_scenes"


class MissingDateError(GroundbreakError, ValueError):
    code = "scene_date_missing"


class ModelError(GroundbreakError, ValueError):
    code = "model_invalid"


class DependencyError(GroundbreakError, ImportError):
    code = "dependency_missing"


class OutputError(GroundbreakError, OSError):
    code = "output_unwritable"


class ReadError(GroundbreakError, OSError):
    """A window of a scene could not be read (e.g. a corrupt tile). Recorded per chip."""

    code = "read_failed"
    retryable = True


class EmptyResultError(GroundbreakError, ValueError):
    code = "empty_result"


class PartialRunError(GroundbreakError, RuntimeError):
    """The run finished but some chips failed; outputs are complete for the others."""

    code = "partial_run"
    exit_code = 3
