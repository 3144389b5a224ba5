"""Scenes as the engine sees them: what ``groundbreak info --json --model DIR SPEC...`` says about each
scene (usable with the model or not, and why), and the problems a failed plan or run lists.

The engine's own discovery decides what a folder, glob or STAC catalog holds (sidecar masks and other
non-imagery come back as "skipped"), so the plugin and the CLI always agree. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Problem:
    """One reason a scene cannot be used, with what to do about it."""

    code: str
    message: str
    hint: str = ""
    scene_id: str = ""
    path: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Problem":
        return cls(code=str(data.get("code") or ""), message=str(data.get("message") or ""),
                   hint=str(data.get("hint") or ""), scene_id=str(data.get("scene_id") or ""),
                   path=str(data.get("path") or ""))

    def text(self) -> str:
        return self.message + ("\n    Hint: " + self.hint if self.hint else "")


@dataclass(frozen=True)
class SceneEntry:
    """One scene in the dock's list."""

    spec: str  # what the user added (a file, folder, glob or STAC JSON)
    path: str  # the scene's raster
    scene_id: str
    date: Optional[str]
    bands: Tuple[str, ...]
    resolution_m: Optional[float]
    usable: Optional[bool]  # None: the engine did not judge it (no model check)
    problems: Tuple[Problem, ...] = ()
    fit: Optional[Dict[str, Any]] = None
    epsg: Optional[int] = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.scene_id

    def line(self) -> str:
        """``name · date · bands · resolution`` and, when not usable, how many problems."""
        res = "%.1f m" % self.resolution_m if self.resolution_m else "? m"
        if self.fit and self.fit.get("resampled"):
            res += " → resampled to %.1f m" % float(self.fit.get("model_gsd") or 0)
        text = "%s · %s · %s · %s" % (self.name, self.date or "no date", short_bands(self.bands), res)
        if self.problems:
            text += "  — %d problem%s" % (len(self.problems), "" if len(self.problems) == 1 else "s")
        return text

    def details(self) -> str:
        lines = [self.path]
        if self.epsg:
            lines.append("EPSG:%s" % self.epsg)
        if self.usable is False or self.problems:
            lines.append("Cannot be used with this model:")
            lines += ["  • " + p.text() for p in self.problems]
        elif self.usable:
            lines.append("Usable with this model.")
        return "\n".join(lines)


_SHORT = {"red": "R", "green": "G", "blue": "B", "nir": "NIR"}


def short_bands(bands: Sequence[str]) -> str:
    """``R,G,B,NIR`` for the usual names (the list is narrow); other names as they are."""
    return ",".join(_SHORT.get(b, b) for b in bands) or "no band names"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def _bands(scene: Mapping[str, Any]) -> Tuple[str, ...]:
    out = []
    for band in scene.get("bands") or []:
        if isinstance(band, dict):
            out.append(str(band.get("name") or band.get("description") or band.get("index")))
        else:
            out.append(str(band))
    return tuple(out)


def _resolution(scene: Mapping[str, Any]) -> Optional[float]:
    fit = scene.get("fit") or {}
    if fit.get("resolution_m"):
        return float(fit["resolution_m"])
    res = scene.get("resolution") or scene.get("res") or []
    try:
        return float(max(abs(float(r)) for r in res)) if res else None
    except (TypeError, ValueError):
        return None


def parse_info(value: Mapping[str, Any], spec: str) -> Tuple[List[SceneEntry], List[Skipped]]:
    """Entries (in the engine's order) and skipped files of one ``info --json`` answer."""
    entries = []
    for scene in value.get("scenes") or []:
        if not isinstance(scene, dict):
            continue
        problems = tuple(Problem.from_dict(p) for p in scene.get("problems") or [] if isinstance(p, dict))
        crs = scene.get("crs")
        epsg = scene.get("epsg") or (crs.get("epsg") if isinstance(crs, dict) else None)
        usable = scene.get("usable")
        entries.append(SceneEntry(
            spec=spec, path=str(scene.get("path") or ""), scene_id=str(scene.get("id") or scene.get("scene_id") or ""),
            date=scene.get("date") or None, bands=_bands(scene), resolution_m=_resolution(scene),
            usable=bool(usable) if usable is not None else None, problems=problems,
            fit=scene.get("fit") if isinstance(scene.get("fit"), dict) else None, epsg=epsg))
    skipped = [Skipped(str(s.get("path") or ""), str(s.get("reason") or ""))
               for s in value.get("skipped") or [] if isinstance(s, dict)]
    return entries, skipped


def problems_of(error: Mapping[str, Any]) -> List[Problem]:
    """The problems an engine ``error`` event lists (or the error itself as the one problem)."""
    listed = [Problem.from_dict(p) for p in error.get("problems") or [] if isinstance(p, dict)]
    if listed:
        return listed
    return [Problem(code=str(error.get("code") or ""), message=str(error.get("message") or "engine error"),
                    hint=str(error.get("hint") or ""))]


def format_error(title: str, error: Mapping[str, Any]) -> str:
    """Every problem of an error, each with its hint, in full (for the dock's message panel)."""
    problems = problems_of(error)
    if len(problems) == 1:
        return "%s: %s" % (title, problems[0].text().replace("\n    Hint:", "\nHint:"))
    lines = ["%s: %d problems" % (title, len(problems))]
    for p in problems:
        where = ("%s: " % (p.scene_id or os.path.basename(p.path))) if (p.scene_id or p.path) else ""
        lines.append("• " + where + p.text())
    return "\n".join(lines)


def run_specs(entries: Sequence[SceneEntry], removed_from: Mapping[str, int]) -> List[str]:
    """What to hand ``run``/``plan``: each spec whose scenes are all still listed, else the listed
    scenes' own files (the engine then discovers their sidecar masks as it does for any file)."""
    out: List[str] = []
    for entry in entries:
        target = entry.spec if not removed_from.get(entry.spec) else entry.path
        if target not in out:
            out.append(target)
    return out


def is_stac(spec: str) -> bool:
    return spec.lower().endswith(".json")
