"""The engine's cache folder: one place decides where it is and how entries are named.

``$GROUNDBREAK_CACHE`` when set, else ``$XDG_CACHE_HOME/groundbreak``, else ``~/.cache/groundbreak``.
Everything the engine caches (measured throughput, runtime decisions, compiled and int8 models,
training chips, demo worlds) lives in one sub-folder per kind. Entry names are built from hashes and
validated names only: text from a model package or a scene never becomes a path on its own, so a
package cannot write outside the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable

from .errors import UsageError

#: The kinds of cached things (one sub-folder each).
KINDS = ("throughput", "auto", "openvino", "openvino-int8", "train", "worlds")

#: A name that may appear in a cache file name: letters, digits, dot, dash, underscore, no leading dot.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def cache_root() -> Path:
    env = os.environ.get("GROUNDBREAK_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "groundbreak"


def cache_dir(kind: str) -> Path:
    """The folder for one kind of cached thing (not created)."""
    if kind not in KINDS:
        raise ValueError("unknown cache kind %r (known: %s)" % (kind, ", ".join(KINDS)))
    return cache_root() / kind


def is_safe_name(name: str) -> bool:
    return bool(_SAFE.match(name)) and ".." not in name


def check_safe_name(name: str, *, what: str, where: str) -> str:
    """``name`` unchanged when it is safe in a file name; else a UsageError naming it and its source."""
    if not is_safe_name(name):
        raise UsageError(
            "%s %r in %s is not a safe name: use 1-64 letters, digits, '.', '-' or '_', starting with a "
            "letter or digit" % (what, name, where),
            hint="rename it in %s (for a model package: the mlm:name field of model.json)" % where,
        )
    return name


def digest(parts: Iterable[object], length: int = 20) -> str:
    """A short hex key from the parts that decide a cache entry."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:length]


def entry(kind: str, key: str, suffix: str) -> Path:
    """The path of a cache entry: ``<cache>/<kind>/<key><suffix>``; ``key`` must be a safe name."""
    check_safe_name(key, what="cache key", where="the engine")
    return cache_dir(kind) / (key + suffix)
