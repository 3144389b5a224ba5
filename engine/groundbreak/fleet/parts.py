"""Per-unit part files: what a worker leaves behind, complete or absent.

A worker writes its unit's chip and detection records to one part file in the run's part folder (a
local path, or any fsspec URL such as ``s3://bucket/run/parts``) and returns only a small summary to
the runner. A part is written atomically: to a temporary name and renamed on a local disk, or as
one object PUT on an object store, so a worker killed mid-write leaves no part at all. Part names
come from a hash of the run id and the unit id (unit ids carry scene ids, which are file names and
never become paths on their own); the unit id is inside the part and is checked on reading.

A part is gzip-compressed JSON: plain data any tool can read, nothing that executes when loaded.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..cache import digest
from ..errors import CorruptFileError, DependencyError, OutputError
from ..store import ChipRecord, DetectionRecord

#: Bumped when the part layout changes; a part of another format is refused.
PART_FORMAT = 1
SUFFIX = ".part.json.gz"


@dataclass(frozen=True, slots=True)
class Part:
    """One unit's records as read back from its part file."""

    unit_id: str
    run_id: str
    chips: Tuple[ChipRecord, ...]
    detections: Tuple[DetectionRecord, ...]
    summary: Dict[str, Any]


def part_name(run_id: str, unit_id: str) -> str:
    return digest([run_id, unit_id], 32) + SUFFIX


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class PartStore:
    """The run's part folder: a local directory or an fsspec URL (picklable: workers get a copy)."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/") if is_url(location) else str(Path(location.replace("file://", "", 1)))

    def __repr__(self) -> str:
        return "PartStore(%r)" % self.location

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartStore) and other.location == self.location

    def __hash__(self) -> int:
        return hash(self.location)

    # -- paths ------------------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return "%s/%s" % (self.location, name) if is_url(self.location) else os.path.join(self.location, name)

    def _fs(self):
        try:
            import fsspec
        except ImportError:
            raise DependencyError("part folder %s is a URL, which needs fsspec" % self.location,
                                  hint="pip install 'groundbreak[fleet]' (fsspec and the protocol's package, "
                                       "e.g. s3fs for s3://)") from None
        fs, _, _ = fsspec.get_fs_token_paths(self.location)
        return fs

    def prepare(self) -> None:
        """Create the folder (the runner does this once, before any worker writes)."""
        try:
            if is_url(self.location):
                self._fs().makedirs(self.location, exist_ok=True)
            else:
                Path(self.location).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError("cannot create the part folder %s: %s" % (self.location, exc),
                              hint="choose a writable --parts location (a shared disk or an object store URL)",
                              ) from None

    # -- writing ----------------------------------------------------------------------------------
    def write(self, run_id: str, unit_id: str, chips: List[ChipRecord], detections: List[DetectionRecord],
              summary: Dict[str, Any]) -> Tuple[str, int]:
        """Write a unit's part atomically; returns (name, bytes)."""
        name = part_name(run_id, unit_id)
        data = encode_part(run_id, unit_id, chips, detections, summary)
        target = self.path(name)
        try:
            if is_url(self.location):
                fs = self._fs()
                # One PUT: an object store never shows a half-written object.
                fs.pipe_file(target, data)
            else:
                tmp = "%s.tmp-%s" % (target, uuid.uuid4().hex)
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
        except OSError as exc:
            raise OutputError("cannot write part %s: %s" % (target, exc), retryable=True,
                              hint="check the part folder is writable from every worker") from None
        return name, len(data)

    # -- reading ----------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        target = self.path(name)
        if is_url(self.location):
            return bool(self._fs().exists(target))
        return os.path.exists(target)

    def read(self, name: str, *, run_id: str, unit_id: str) -> Part:
        target = self.path(name)
        try:
            if is_url(self.location):
                raw = self._fs().cat_file(target)
            else:
                with open(target, "rb") as fh:
                    raw = fh.read()
        except (OSError, FileNotFoundError) as exc:
            raise CorruptFileError("cannot read part %s of unit %s: %s" % (target, unit_id, exc),
                                   hint="run `groundbreak fleet run` again: the unit is redone") from None
        return decode_part(raw, where=target, run_id=run_id, unit_id=unit_id)

    def find(self, name: str, *, run_id: str, unit_id: str) -> Optional[Part]:
        """The part if it exists and is complete and this unit's, else None."""
        if not self.exists(name):
            return None
        try:
            return self.read(name, run_id=run_id, unit_id=unit_id)
        except CorruptFileError:
            return None

    def remove(self, name: str) -> None:
        target = self.path(name)
        try:
            if is_url(self.location):
                fs = self._fs()
                if fs.exists(target):
                    fs.rm(target)
            else:
                Path(target).unlink(missing_ok=True)
        except OSError:
            pass  # a stale part is ignored anyway (the ledger decides which parts count)


# -- encoding -------------------------------------------------------------------------------------
def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else base64.b64decode(text)


def encode_part(run_id: str, unit_id: str, chips: List[ChipRecord], detections: List[DetectionRecord],
                summary: Dict[str, Any]) -> bytes:
    doc = {
        "format": PART_FORMAT, "run_id": run_id, "unit_id": unit_id, "summary": summary,
        "chips": [[c.chip_id, c.aoi_id, c.scene_id, c.date, c.status, c.valid_fraction, c.screened_by,
                   _b64(c.geometry_wkb), c.score, c.detail] for c in chips],
        "detections": [[d.chip_id, d.aoi_id, d.scene_id, d.date, d.score, d.label, d.model_id,
                        _b64(d.geometry_wkb), _b64(d.activity_wkb), d.active_cells] for d in detections],
    }
    # mtime=0: the same records give the same bytes (a re-run unit rewrites an identical part).
    return gzip.compress(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode(), compresslevel=6, mtime=0)


def decode_part(raw: bytes, *, where: str, run_id: str, unit_id: str) -> Part:
    def bad(why: str) -> CorruptFileError:
        return CorruptFileError("part %s is unusable: %s" % (where, why),
                                hint="delete it and run `groundbreak fleet run` again: the unit is redone")

    try:
        doc = json.loads(gzip.decompress(raw))
    except (OSError, EOFError, ValueError) as exc:
        raise bad(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != PART_FORMAT:
        raise bad("not a part of format %d" % PART_FORMAT)
    if doc.get("unit_id") != unit_id or doc.get("run_id") != run_id:
        raise bad("it belongs to unit %r of run %r, not unit %r of run %r" % (
            doc.get("unit_id"), doc.get("run_id"), unit_id, run_id))
    try:
        chips = tuple(ChipRecord(chip_id=c[0], aoi_id=c[1], scene_id=c[2], date=c[3], status=c[4],
                                 valid_fraction=float(c[5]), screened_by=c[6], geometry_wkb=_unb64(c[7]) or b"",
                                 score=c[8], detail=c[9]) for c in doc["chips"])
        detections = tuple(DetectionRecord(chip_id=d[0], aoi_id=d[1], scene_id=d[2], date=d[3], score=float(d[4]),
                                           label=d[5], model_id=d[6], geometry_wkb=_unb64(d[7]) or b"",
                                           activity_wkb=_unb64(d[8]), active_cells=int(d[9]))
                           for d in doc["detections"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise bad("malformed records (%s)" % exc) from None
    return Part(unit_id=unit_id, run_id=run_id, chips=chips, detections=detections,
                summary=dict(doc.get("summary") or {}))
