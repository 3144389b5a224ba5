"""The engine as a blocking child process bound to a Processing feedback (or any callbacks).

Used by the Processing algorithms (Toolbox, Modeler, qgis_process) and for the quick ``info`` /
``model`` queries. Standard library only; the feedback object is duck-typed
(``isCanceled()``, ``setProgress()``, ``pushInfo()``, ``reportError()``).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import protocol, request
from .errors import PluginError
from .escalation import DEFAULT_POLICY, Escalation, StopPolicy, StopStep
from .stream import EventStream, RunState, cli_error, describe_exit, final_status


class EngineCallError(PluginError):
    """An engine command that did not start, failed, or answered something that is not JSON."""


def run_events(
    interpreter: str,
    args: Sequence[str],
    is_canceled: Callable[[], bool] = lambda: False,
    on_event: Optional[Callable[[protocol.Event], None]] = None,
    on_stderr: Optional[Callable[[str], None]] = None,
    on_garbage: Optional[Callable[[str], None]] = None,
    poll_s: float = 0.1,
    policy: StopPolicy = DEFAULT_POLICY,
) -> Tuple[str, RunState, Optional[Tuple[str, str]]]:
    """Runs an engine command with ``--events jsonl``; returns (status, state, failure)."""
    argv = request.engine_argv(interpreter, args)
    stream = EventStream(on_event=on_event, on_garbage=on_garbage)
    stderr_tail: List[str] = []
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=request.clean_environment(), bufsize=0,
        )
    except OSError as exc:
        return "failed", stream.state, ("could not start the engine interpreter %r: %s" % (argv[0], exc),
                                        "set the engine's Python in Groundbreak settings, or use 'Set up engine'")

    lock = threading.Lock()
    chunks: List[bytes] = []

    stdout, stderr, stdin = proc.stdout, proc.stderr, proc.stdin
    assert stdout is not None and stderr is not None and stdin is not None

    def pump_stdout() -> None:
        while True:
            chunk = stdout.read1(65536) if hasattr(stdout, "read1") else stdout.read(65536)
            if not chunk:
                return
            with lock:
                chunks.append(chunk)

    def pump_stderr() -> None:
        for raw in iter(stderr.readline, b""):
            text = raw.decode("utf-8", "replace")
            stderr_tail.append(text)
            del stderr_tail[:-200]
            if on_stderr is not None:
                on_stderr(text.rstrip("\n"))

    readers = [threading.Thread(target=pump_stdout, daemon=True), threading.Thread(target=pump_stderr, daemon=True)]
    for thread in readers:
        thread.start()

    def drain() -> None:
        with lock:
            pending = b"".join(chunks)
            chunks.clear()
        if pending:
            stream.feed(pending)  # callbacks run on this (the caller's) thread

    def send_cancel() -> None:
        try:
            stdin.write(protocol.cancel_message().encode("utf-8"))
            stdin.flush()
            stdin.close()
        except OSError:
            pass

    stopper = Escalation({StopStep.CANCEL: send_cancel, StopStep.TERMINATE: proc.terminate,
                          StopStep.KILL: proc.kill}, policy)
    while proc.poll() is None:
        drain()
        if is_canceled():
            stopper.request(time.monotonic())
        stopper.poll(time.monotonic())
        time.sleep(poll_s)
    cancelled = stopper.requested
    for thread in readers:
        thread.join(timeout=5)
    drain()
    stream.close()
    crashed = proc.returncode is not None and proc.returncode < 0 and not cancelled
    status = final_status(stream.state, proc.returncode, crashed)
    if status == "failed" and cancelled and not stream.state.errors and not stream.state.status:
        status = "cancelled"
    failure: Optional[Tuple[str, str]] = None
    if status == "failed":
        failure = describe_exit(stream.state, proc.returncode, "".join(stderr_tail))
    return status, stream.state, failure


def run_json(interpreter: str, args: Sequence[str], timeout_s: float = 120.0,
             is_canceled: Optional[Callable[[], bool]] = None, poll_s: float = 0.2) -> Dict[str, Any]:
    """Runs a quick ``--json`` engine command (``info``, ``model``, ``plan --json``, ``timeline --json``)
    and parses stdout. ``is_canceled`` (a Processing feedback's) stops it: terminate, then kill."""
    argv = request.engine_argv(interpreter, args)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=request.clean_environment())
    except OSError as exc:
        raise EngineCallError(
            "could not start the engine interpreter %r: %s" % (argv[0], exc),
            "set the engine's Python in Groundbreak settings, or use 'Set up engine'",
        ) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stdout, stderr_bytes = proc.communicate(timeout=poll_s)  # retrying loses no output
            break
        except subprocess.TimeoutExpired:
            cancelled = is_canceled is not None and is_canceled()
            if not cancelled and time.monotonic() < deadline:
                continue
            _stop(proc)
            if cancelled:
                raise EngineCallError("engine %s was cancelled" % args[0],
                                      "nothing was changed if it had not finished writing") from None
            raise EngineCallError("engine %s took longer than %.0f s" % (args[0], timeout_s),
                                  "try again with fewer inputs") from None
    stderr = stderr_bytes.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        message, hint = cli_error(stderr)
        raise EngineCallError(
            "engine %s failed (exit code %d): %s" % (args[0], proc.returncode, message or "no message"),
            hint or "see the Groundbreak tab of the log panel",
        )
    try:
        value = json.loads(stdout.decode("utf-8", "replace"))
    except ValueError:
        raise EngineCallError(
            "engine %s printed something that is not JSON: %.200s" % (args[0], stdout.decode("utf-8", "replace")),
            "check that the interpreter runs the Groundbreak engine",
        ) from None
    if not isinstance(value, dict):
        raise EngineCallError("engine %s printed JSON that is not an object" % args[0])
    return value


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
