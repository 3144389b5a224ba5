"""What pip is doing, in words a user understands, from pip's own output lines and its install report.

Standard library only (unit-tested on recorded pip output). "Set up engine" first asks pip for the
list of packages it would install (``pip install --dry-run --report``), so the install can say
"12 of 74 packages" rather than repeat pip's raw lines.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlparse

_COLLECT = re.compile(r"^(?:Collecting|Processing|Requirement already satisfied:)\s+(\S+)")
_DOWNLOAD = re.compile(r"^\s*(Downloading|Using cached)\s+(\S+)\s+\(([0-9.]+\s*[kMG]?B)\)")
_INSTALLING = re.compile(r"^Installing collected packages:\s*(.*)$")
_NOISE = (re.compile(r"^WARNING: Location '.*' is ignored"),)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    size: Optional[int]  # bytes, when pip's report says where the file is and it is local


def report_packages(path: str) -> List[Package]:
    """Packages of a ``pip install --dry-run --report PATH`` (sizes of local files only)."""
    with open(path, encoding="utf-8") as fh:
        report = json.load(fh)
    out = []
    for item in report.get("install", []):
        meta = item.get("metadata") or {}
        url = (item.get("download_info") or {}).get("url", "")
        size = None
        if url.startswith("file://"):
            try:
                size = os.path.getsize(unquote(urlparse(url).path))
            except OSError:
                size = None
        out.append(Package(str(meta.get("name", "?")), str(meta.get("version", "?")), size))
    return out


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return ("%.0f %s" if unit in ("B", "kB") else "%.1f %s") % (size, unit)
        size /= 1000.0
    return "%.1f GB" % size


def parse_size(text: str) -> int:
    match = re.match(r"([0-9.]+)\s*([kMG]?)B", text)
    if not match:
        return 0
    return int(float(match.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[match.group(2)])


@dataclass
class PipProgress:
    """Follows ``pip install`` line by line."""

    total: int = 0  # packages pip said it would install (0: not known)
    collected: List[str] = field(default_factory=list)
    downloaded: List[Tuple[str, int]] = field(default_factory=list)  # (file, bytes) downloaded or from cache
    installing: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    done: bool = False

    def feed(self, line: str) -> bool:
        """Takes one output line; True when it changed what :meth:`describe` says."""
        if any(p.match(line) for p in _NOISE):
            return False
        match = _COLLECT.match(line)
        if match:
            self.collected.append(match.group(1))
            return True
        match = _DOWNLOAD.match(line)
        if match:
            self.downloaded.append((os.path.basename(match.group(2)), parse_size(match.group(3))))
            return True
        match = _INSTALLING.match(line)
        if match:
            self.installing = [n.strip() for n in match.group(1).split(",") if n.strip()]
            return True
        if line.startswith("Successfully installed"):
            self.done = True
            return True
        if line.startswith("ERROR:"):
            self.errors.append(line[len("ERROR:"):].strip())
            return True
        return False

    @property
    def downloaded_bytes(self) -> int:
        return sum(size for _, size in self.downloaded)

    def fraction(self) -> float:
        """0..1 through the install: finding packages is most of the wait, installing the rest."""
        if self.done:
            return 1.0
        if self.installing:
            return 0.8
        if self.total:
            return 0.8 * min(len(self.collected), self.total) / self.total
        return 0.0

    def describe(self) -> str:
        if self.done:
            return "installed %d packages" % len(self.installing)
        if self.installing:
            return "installing %d packages (torch and OpenVINO take the longest)…" % len(self.installing)
        of = " of %d" % self.total if self.total else ""
        text = "fetching packages: %d%s" % (min(len(self.collected), self.total or len(self.collected)), of)
        if self.downloaded:
            name, size = self.downloaded[-1]
            text += ", %s so far (last: %s, %s)" % (human_size(self.downloaded_bytes), name, human_size(size))
        return text
