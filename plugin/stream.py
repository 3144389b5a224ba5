"""Turns the engine's stdout, chunk by chunk, into protocol events and a running state.

Standard library only: the dock (QProcess) and the Processing algorithms (blocking process) both
feed it raw bytes; tests feed it recorded streams, garbage and truncated lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import names, protocol


@dataclass
class RunState:
    """What the engine has said so far about one run (mutable: it grows as events arrive)."""

    stage: str = ""
    stage_message: str = ""
    done: int = 0
    total: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    features_received: int = 0
    crs: str = ""
    hello: Optional[Dict[str, Any]] = None
    errors: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[Dict[str, Any]] = field(default_factory=list)
    result: Optional[Dict[str, Any]] = None
    status: str = ""
    exit_code: Optional[int] = None
    garbage: List[str] = field(default_factory=list)
    last_seq: int = -1
    seq_gaps: int = 0

    @property
    def finished(self) -> bool:
        return bool(self.status)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def summary(self) -> str:
        counts = self.counts
        parts = []
        for key in names.PROGRESS_COUNTS:
            if key in counts:
                parts.append("%s %d" % (key.replace("_", " "), counts[key]))
        return ", ".join(parts)


Handler = Callable[[protocol.Event], None]

# Share of a run's wall time per stage (roughly, on CPU): the bar moves steadily through a run
# instead of filling up once per stage.
STAGE_SPAN = {"plan": (0, 3), "extract": (3, 8), "screen": (3, 8), "infer": (8, 96), "write": (96, 99),
              "aggregate": (99, 100)}


def overall_percent(stage: str, done: int, total: int) -> int:
    """Progress of the whole run (0-100) from one stage's done/total."""
    start, end = STAGE_SPAN.get(stage, (0, 100))
    fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
    return int(round(start + (end - start) * fraction))


class EventStream:
    """Feeds bytes in, calls ``on_event`` for every valid message and keeps a :class:`RunState`.

    Malformed lines never raise: they are kept in ``state.garbage`` (capped) and passed to
    ``on_garbage`` so a misbehaving engine cannot break the client.
    """

    MAX_GARBAGE = 50

    def __init__(self, on_event: Optional[Handler] = None, on_garbage: Optional[Callable[[str], None]] = None) -> None:
        self.state = RunState()
        self._buffer = protocol.LineBuffer()
        self._on_event = on_event
        self._on_garbage = on_garbage

    def feed(self, chunk: bytes) -> List[protocol.Event]:
        try:
            lines = self._buffer.feed(chunk)
        except protocol.ProtocolError as exc:
            self._garbage(str(exc))
            return []
        return self._handle(lines)

    def close(self) -> List[protocol.Event]:
        """End of stream: a truncated final line is reported as garbage, never half-parsed."""
        return self._handle(self._buffer.flush(), truncated=True)

    def _handle(self, lines: Tuple[bytes, ...], truncated: bool = False) -> List[protocol.Event]:
        events = []
        for line in lines:
            try:
                event = protocol.parse_line(line)
            except protocol.ProtocolError as exc:
                prefix = "truncated last line: " if truncated else ""
                self._garbage(prefix + str(exc))
                continue
            if event is None:
                continue
            self._apply(event)
            events.append(event)
            if self._on_event is not None:
                self._on_event(event)
        return events

    def _garbage(self, message: str) -> None:
        if len(self.state.garbage) < self.MAX_GARBAGE:
            self.state.garbage.append(message)
        if self._on_garbage is not None:
            self._on_garbage(message)

    def _apply(self, event: protocol.Event) -> None:
        state = self.state
        if event.seq != state.last_seq + 1:
            state.seq_gaps += 1
        state.last_seq = event.seq
        kind = event.type
        if kind == "hello":
            state.hello = dict(event.data)
        elif kind == "stage":
            state.stage = event.get("stage")
            state.stage_message = str(event.get("message", ""))
        elif kind == "progress":
            state.stage = event.get("stage")
            state.done = int(event.get("done"))
            state.total = int(event.get("total"))
            counts = event.get("counts") or {}
            state.counts = {str(k): v for k, v in counts.items() if isinstance(v, int)}
        elif kind == "features":
            state.crs = event.get("crs")
            state.features_received += len(event.get("features"))
        elif kind == "warning":
            state.warnings.append(dict(event.data))
        elif kind == "error":
            state.errors.append(dict(event.data))
        elif kind == "result":
            state.result = dict(event.data)
        elif kind == "done":
            state.status = event.get("status")
            state.exit_code = int(event.get("exit_code"))


def valid_features(event: protocol.Event) -> List[Dict[str, Any]]:
    """The features of a ``features`` event that have a polygon geometry (others are skipped)."""
    out = []
    for feature in event.get("features") or []:
        if not isinstance(feature, dict):
            continue
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        if not isinstance(feature.get("properties", {}), dict):
            continue
        out.append(feature)
    return out


def final_status(state: RunState, process_exit_code: Optional[int], crashed: bool) -> str:
    """The run's outcome, trusting the engine's ``done`` when it sent one and the process otherwise."""
    if state.status:
        return state.status
    if crashed:
        return "failed"
    if process_exit_code == 0:
        # Exited cleanly without a done event: the stream was cut; do not claim success.
        return "failed" if state.garbage or not state.result else "ok"
    if process_exit_code == 3:
        return "partial"
    return "failed"


def describe_exit(state: RunState, process_exit_code: Optional[int], stderr_tail: str) -> Tuple[str, str]:
    """(message, hint) for a run that failed without a proper error event."""
    if state.errors:
        err = state.errors[-1]
        return str(err.get("message", "engine error")), str(err.get("hint", ""))
    tail = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
    message = "the engine stopped with exit code %s" % process_exit_code
    if tail:
        message += ": " + tail[0][:300]
    hint = "see the Groundbreak tab of the log panel for the engine's output"
    if process_exit_code == 2:
        hint = "the engine rejected its arguments; check the settings and inputs"
    return message, hint


def cli_error(stderr: str) -> Tuple[str, str]:
    """(message, hint) from the CLI's ``Error: ...`` / ``Hint: ...`` lines (a message may span
    several lines: every line up to the hint is kept); else the last stderr line."""
    message: List[str] = []
    hint: List[str] = []
    target: Optional[List[str]] = None
    for line in stderr.splitlines():
        if line.startswith("Error:"):
            message = [line[len("Error:"):].strip()]
            target = message
        elif line.startswith("Hint:"):
            hint = [line[len("Hint:"):].strip()]
            target = hint
        elif target is not None and line.strip() and not line.startswith("Traceback"):
            target.append(line.rstrip())
    if not message and stderr.strip():
        return stderr.strip().splitlines()[-1][:300], "\n".join(hint)
    return "\n".join(message), "\n".join(hint)
