"""Where a run reports: protocol events on a stream (for clients) and/or a human summary.

The engine never prints anything else on stdout when events are on, so every stdout line is a
protocol message (logs go to stderr).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from . import __version__
from .protocol import Event, encode, make_event

log = logging.getLogger(__name__)


class Reporter:
    """Sends protocol events. With no stream it only keeps a record (library use, tests)."""

    def __init__(self, stream: Optional[TextIO] = None, *, command: str = "run",
                 listener: Optional[Callable[[Event], None]] = None) -> None:
        self._stream = stream
        self._seq = 0
        self._lock = threading.Lock()
        self.listener = listener
        self.command = command
        self.warnings: List[Dict[str, str]] = []

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def emit(self, type_: str, **data: Any) -> None:
        with self._lock:
            event = make_event(type_, self._seq, **data)
            self._seq += 1
            if self._stream is not None:
                try:
                    self._stream.write(encode(event) + "\n")
                    self._stream.flush()
                except (BrokenPipeError, ValueError):
                    # The client went away; the run still finishes and writes its outputs.
                    self._stream = None
            if self.listener is not None:
                self.listener(event)

    def hello(self, model: Optional[Dict[str, Any]]) -> None:
        self.emit("hello", engine=__version__, command=self.command, model=model, pid=os.getpid())

    def stage(self, stage: str, message: str) -> None:
        log.info("%s: %s", stage, message)
        self.emit("stage", stage=stage, message=message)

    def progress(self, stage: str, done: int, total: int, counts: Dict[str, int]) -> None:
        self.emit("progress", stage=stage, done=done, total=total, counts=dict(counts))

    def features(self, crs: str, features: List[Dict[str, Any]]) -> None:
        if features:
            self.emit("features", crs=crs, features=features)

    def warning(self, code: str, message: str, hint: str = "") -> None:
        log.warning("%s%s", message, (" (%s)" % hint) if hint else "")
        self.warnings.append({"code": code, "message": message, "hint": hint})
        self.emit("warning", code=code, message=message, hint=hint)

    def error(self, code: str, message: str, hint: str, retryable: bool,
              problems: Sequence[Dict[str, str]] = ()) -> None:
        extra: Dict[str, Any] = {"problems": [dict(p) for p in problems]} if problems else {}
        self.emit("error", code=code, message=message, hint=hint, retryable=retryable, **extra)

    def result(self, outputs: Dict[str, str], stats: Dict[str, Any], cost: Dict[str, Any]) -> None:
        self.emit("result", outputs=outputs, stats=stats, cost=cost)

    def done(self, status: str, exit_code: int) -> None:
        self.emit("done", status=status, exit_code=exit_code)


class CancelToken:
    """Set by a cancel message on stdin, stdin closing, SIGTERM/SIGINT or a caller; checked
    between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def watch_stdin(token: CancelToken, stream: Optional[TextIO] = None) -> threading.Thread:
    """Cancel when the client sends ``{"type":"cancel"}`` or closes our stdin."""
    from .protocol import is_cancel

    source = stream if stream is not None else sys.stdin

    def _watch() -> None:
        try:
            for line in source:
                if is_cancel(line):
                    token.cancel("cancel message on stdin")
                    return
        except (OSError, ValueError):
            pass
        token.cancel("stdin closed")

    thread = threading.Thread(target=_watch, name="groundbreak-stdin", daemon=True)
    thread.start()
    return thread
