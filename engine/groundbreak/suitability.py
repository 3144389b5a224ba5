"""Whether a scene suits a model: bands, ground resolution, acquisition date, dtype.

Every problem of every scene is found before any work starts and reported at once, bands first
(the most fundamental: without the bands nothing else matters), then resolution, then the date.
A scene whose pixels are more than twice as coarse or fine as the model's ground sample distance is
refused unless the caller allows resampling (``--allow-resample``): a 90 m Landsat scene read as if
it were 2 m imagery gives confident nonsense. Within that range a scene is resampled onto the chip
grid and the resampling is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

from .errors import (
    BandMismatchError,
    GroundbreakError,
    MissingDateError,
    ResolutionError,
    ScenesUnusableError,
)
from .scene import Scene, ground_resolution_m, looks_like_sidecar, select_bands

#: A scene is used without --allow-resample when its resolution is within this factor of the model's.
RESAMPLE_FACTOR = 2.0
#: Resolutions closer than this (relative) to the model's GSD are not called resampling.
_SAME_GSD = 0.01


class InputSpec(Protocol):
    """What a model must say about its input for planning (a ModelPackage says it)."""

    @property
    def bands(self) -> Tuple[str, ...]: ...
    @property
    def chip_size(self) -> int: ...
    @property
    def gsd(self) -> float: ...
    @property
    def gsd_range(self) -> Tuple[float, float]: ...


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a scene cannot be used as it is."""

    code: str  # the error code of the matching GroundbreakError (band_mismatch, resolution_mismatch, …)
    scene_id: str
    path: str
    message: str
    hint: str

    def to_dict(self) -> Dict[str, str]:
        return {"code": self.code, "scene_id": self.scene_id, "path": self.path, "message": self.message,
                "hint": self.hint}


@dataclass(frozen=True, slots=True)
class SceneFit:
    """How a usable scene is read for a model."""

    band_indexes: Tuple[int, ...]  # 1-based, in the model's band order
    resolution_m: float  # the scene's ground resolution (coarser axis), metres per pixel
    model_gsd: float

    @property
    def resampled(self) -> bool:
        return abs(self.resolution_m - self.model_gsd) / self.model_gsd > _SAME_GSD

    @property
    def scale(self) -> float:
        """Scene pixel size over the model's: 2.5 for 5 m imagery and a 2 m model."""
        return self.resolution_m / self.model_gsd


_NOT_IMAGERY = "not_imagery"
_ORDER = {_NOT_IMAGERY: -1, BandMismatchError.code: 0, ResolutionError.code: 1, "dtype_mixed": 2,
          MissingDateError.code: 3}


def fit_scene(scene: Scene, model: InputSpec, *,
              allow_resample: bool = False) -> Tuple[Optional[SceneFit], List[Problem]]:
    """The scene's fit for the model, or None with every problem found (bands first)."""
    problems: List[Problem] = []
    indexes: Tuple[int, ...] = ()
    if looks_like_sidecar(scene.path):
        problems.append(_problem(
            _NOT_IMAGERY, scene, "%s is named like a sidecar quality mask (UDM2, SCL or a *_mask file), not "
            "imagery" % scene.path,
            "pass the scene it belongs to: the mask next to it is found and used automatically"))
    try:
        indexes = select_bands(scene, model.bands)
    except GroundbreakError as exc:
        problems.append(_problem(exc.code, scene, exc.message, exc.hint))
    res = ground_resolution_m(scene)
    lo, hi = model.gsd / RESAMPLE_FACTOR, model.gsd * RESAMPLE_FACTOR
    if not allow_resample and not lo <= res <= hi:
        problems.append(_problem(
            ResolutionError.code, scene,
            "scene %s has %s m pixels but model expects %.2f m imagery (used as it is only between %.2f and "
            "%.2f m, half to twice its ground sample distance)" % (scene.scene_id, _metres(res), model.gsd, lo, hi),
            "use imagery near %.2f m, or pass --allow-resample to resample it onto the %.2f m chip grid anyway "
            "(the model's scores on resampled imagery are not validated)" % (model.gsd, model.gsd),
        ))
    mixed = sorted(set(scene.band_dtypes[i - 1] for i in indexes)) if indexes and scene.band_dtypes else []
    if len(mixed) > 1:
        problems.append(_problem(
            "dtype_mixed", scene,
            "scene %s mixes data types across the model's bands (%s); one scaling cannot fit them all"
            % (scene.scene_id, ", ".join(mixed)),
            "convert the file to one data type, e.g. gdal_translate -ot UInt16 %s fixed.tif" % scene.path,
        ))
    if not scene.has_date:
        problems.append(_problem(MissingDateError.code, scene, scene.date_problem or
                                 "no acquisition date for %s" % scene.path, scene.date_hint))
    problems.sort(key=lambda p: _ORDER.get(p.code, 9))
    if problems:
        return None, problems
    return SceneFit(band_indexes=indexes, resolution_m=res, model_gsd=model.gsd), []


def fit_scenes(scenes: Sequence[Scene], model: InputSpec, *, allow_resample: bool = False) -> Tuple[SceneFit, ...]:
    """Fits for every scene, or one error that lists every problem of every scene."""
    fits: List[SceneFit] = []
    problems: List[Problem] = []
    for scene in scenes:
        fit, found = fit_scene(scene, model, allow_resample=allow_resample)
        problems.extend(found)
        if fit is not None:
            fits.append(fit)
    if problems:
        raise problems_error(problems)
    return tuple(fits)


def problems_error(problems: Sequence[Problem]) -> GroundbreakError:
    """One problem: its own error (same code, message and hint); several: one error listing them all."""
    ordered = sorted(problems, key=lambda p: _ORDER.get(p.code, 9))
    if len(ordered) == 1:
        p = ordered[0]
        cls = {BandMismatchError.code: BandMismatchError, ResolutionError.code: ResolutionError,
               MissingDateError.code: MissingDateError}.get(p.code, ScenesUnusableError)
        err: GroundbreakError = cls(p.message, hint=p.hint, problems=(p.to_dict(),))
    else:
        scenes = sorted({p.scene_id for p in ordered})
        lines = ["%d problem(s) with %d scene(s):" % (len(ordered), len(scenes))]
        lines += ["  - %s" % p.message for p in ordered]
        hints: List[str] = []
        for p in ordered:
            if p.hint and p.hint not in hints:
                hints.append(p.hint)
        err = ScenesUnusableError("\n".join(lines), hint="; ".join(hints),
                                  problems=tuple(p.to_dict() for p in ordered))
    return err


def _problem(code: str, scene: Scene, message: str, hint: str) -> Problem:
    return Problem(code=code, scene_id=scene.scene_id, path=scene.path, message=message, hint=hint)


def _metres(value: float) -> str:
    return "%.0f" % value if value >= 10 else "%.2f" % value
