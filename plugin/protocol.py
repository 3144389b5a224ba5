"""The engine <-> client wire protocol: one JSON object per line on the engine's stdout.

This file is the single definition of the messages. It imports only the standard library so the
QGIS plugin can carry a byte-identical copy (``plugin/protocol.py``; a test proves the copies match).

Every message has ``v`` (protocol version), ``type`` and ``seq`` (0, 1, 2 … per stream). Clients must
ignore unknown fields and, for forward compatibility, unknown types (``parse_line`` returns them with
``known=False``). Logs never go to stdout; they go to stderr.

Engine -> client types and their required fields:

==========  ===========================================================================
hello       engine (version str), command (str), model (dict or null), pid (int)
stage       stage (one of STAGES), message (str)
progress    stage, done (int), total (int), counts (dict of str -> int)
features    crs (str, e.g. "EPSG:32614"), features (list of GeoJSON Feature dicts)
warning     code, message, hint
error       code, message, hint, retryable (bool)
result      outputs (dict of str -> path), stats (dict), cost (dict)
done        status (one of STATUSES), exit_code (int)
==========  ===========================================================================

Client -> engine (stdin): ``{"type": "cancel"}``. Closing stdin also cancels (when the engine was
started with ``--events jsonl``, which is how clients start it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple

PROTOCOL_VERSION = 1

STAGES = ("plan", "extract", "screen", "infer", "write", "aggregate")
STATUSES = ("ok", "cancelled", "partial", "failed")

REQUIRED: Dict[str, Tuple[str, ...]] = {
    "hello": ("engine", "command", "model", "pid"),
    "stage": ("stage", "message"),
    "progress": ("stage", "done", "total", "counts"),
    "features": ("crs", "features"),
    "warning": ("code", "message", "hint"),
    "error": ("code", "message", "hint", "retryable"),
    "result": ("outputs", "stats", "cost"),
    "done": ("status", "exit_code"),
}

CLIENT_TYPES = ("cancel",)

# A line longer than this is treated as garbage rather than parsed (a features batch is bounded
# by the engine's batch size, far below this).
MAX_LINE_BYTES = 64 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


@dataclass(frozen=True)
class Event:
    """One parsed message. ``data`` holds every field except v/type/seq."""

    type: str
    seq: int
    data: Dict[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION
    known: bool = True

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"v": self.v, "type": self.type, "seq": self.seq}
        out.update(self.data)
        return out


def make_event(type_: str, seq: int, **data: Any) -> Event:
    """Build a validated engine -> client event."""
    if type_ not in REQUIRED:
        raise ProtocolError("unknown event type %r (known: %s)" % (type_, ", ".join(REQUIRED)))
    missing = [name for name in REQUIRED[type_] if name not in data]
    if missing:
        raise ProtocolError("%s event is missing %s" % (type_, ", ".join(missing)))
    _check_values(type_, data)
    return Event(type=type_, seq=int(seq), data=dict(data))


def encode(event: Event) -> str:
    """One line of JSON (no trailing newline). NaN/Infinity are not valid JSON and are refused."""
    return json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False, default=_default)


def parse_line(line: "str | bytes") -> Optional[Event]:
    """Parse one line from the engine. Blank lines give None; anything malformed raises ProtocolError."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("line of %d bytes exceeds the protocol limit" % len(line))
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("line is not UTF-8: %s" % exc) from None
    text = line.strip()
    if not text:
        return None
    if len(text) > MAX_LINE_BYTES:
        raise ProtocolError("line of %d characters exceeds the protocol limit" % len(text))
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ProtocolError("not JSON (%s): %.120s" % (exc, text)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object: %.120s" % text)
    type_ = obj.pop("type", None)
    seq = obj.pop("seq", None)
    version = obj.pop("v", None)
    if not isinstance(type_, str):
        raise ProtocolError("message without a string 'type': %.120s" % text)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("%s message without a valid 'seq'" % type_)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("%s message without a protocol version 'v'" % type_)
    if version > PROTOCOL_VERSION:
        raise ProtocolError(
            "engine speaks protocol v%d but this client understands up to v%d; update the plugin"
            % (version, PROTOCOL_VERSION)
        )
    if type_ not in REQUIRED:
        return Event(type=type_, seq=seq, data=obj, v=version, known=False)
    missing = [name for name in REQUIRED[type_] if name not in obj]
    if missing:
        raise ProtocolError("%s message is missing %s" % (type_, ", ".join(missing)))
    _check_values(type_, obj)
    return Event(type=type_, seq=seq, data=obj, v=version)


def parse_lines(lines: Iterable["str | bytes"]) -> Iterable[Event]:
    """Parse many lines, skipping blanks; raises on the first malformed line."""
    for line in lines:
        event = parse_line(line)
        if event is not None:
            yield event


def cancel_message() -> str:
    """The line a client writes to the engine's stdin to stop a run between batches."""
    return json.dumps({"v": PROTOCOL_VERSION, "type": "cancel"}) + "\n"


def is_cancel(line: "str | bytes") -> bool:
    """True when a stdin line asks the engine to cancel."""
    try:
        obj = json.loads(line)
    except (ValueError, TypeError):
        return False
    return isinstance(obj, dict) and obj.get("type") == "cancel"


class LineBuffer:
    """Reassembles lines from arbitrary chunks (as a QProcess delivers stdout).

    ``feed`` returns the complete lines seen so far; a partial last line is kept until its newline.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> Tuple[bytes, ...]:
        data = self._pending + chunk
        parts = data.split(b"\n")
        self._pending = parts.pop()
        if len(self._pending) > MAX_LINE_BYTES:
            self._pending = b""
            raise ProtocolError("unterminated line exceeds the protocol limit; dropped")
        return tuple(part for part in parts if part.strip())

    def flush(self) -> Tuple[bytes, ...]:
        """Whatever is left when the stream ends (a truncated final line, if any)."""
        rest, self._pending = self._pending, b""
        return (rest,) if rest.strip() else ()


def _check_values(type_: str, data: Dict[str, Any]) -> None:
    if type_ in ("stage", "progress") and data["stage"] not in STAGES:
        raise ProtocolError("unknown stage %r" % (data["stage"],))
    if type_ == "progress":
        for key in ("done", "total"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
                raise ProtocolError("progress %s must be a non-negative integer" % key)
        if not isinstance(data["counts"], dict):
            raise ProtocolError("progress counts must be an object")
    elif type_ == "features":
        if not isinstance(data["features"], list):
            raise ProtocolError("features must be a list")
        if not isinstance(data["crs"], str):
            raise ProtocolError("features crs must be a string")
    elif type_ == "done":
        if data["status"] not in STATUSES:
            raise ProtocolError("unknown done status %r" % (data["status"],))
        if not isinstance(data["exit_code"], int):
            raise ProtocolError("done exit_code must be an integer")
    elif type_ == "error" and not isinstance(data["retryable"], bool):
        raise ProtocolError("error retryable must be a boolean")


def _default(obj: Any) -> Any:
    # numpy scalars and paths reach the encoder from engine code; keep this module stdlib-only.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError("not JSON serialisable: %r" % (obj,))
