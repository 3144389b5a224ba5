"""The engine as an asynchronous QProcess on the main thread (the live dock's driver).

Events arrive through Qt signals as the engine prints them, so features reach the map while the
run is going. A crash, a hang or garbage on stdout ends the run with a report; it never raises
into QGIS. :func:`engine_qprocess` is the one builder of a child process with the engine's clean
environment: runs, JSON queries and "Set up engine" all start their processes through it.
"""

from __future__ import annotations

import json
import time
from typing import List, Optional, Sequence

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from . import log, protocol, request
from .errors import PluginError
from .escalation import DEFAULT_POLICY, Escalation, StopPolicy, StopStep
from .stream import EventStream, RunState, cli_error, describe_exit, final_status

START_HINT = "set the engine's Python in Groundbreak settings, or use 'Set up engine'"


def engine_qprocess(parent: Optional[QObject], merged: bool = False) -> QProcess:
    """A QProcess with the engine's clean environment (no QGIS PYTHONHOME, GDAL_DATA, PROJ_LIB …);
    ``merged`` sends stderr into stdout (for tools whose output is only shown, like pip)."""
    proc = QProcess(parent)
    env = QProcessEnvironment()
    for key, value in request.clean_environment().items():
        env.insert(key, value)
    proc.setProcessEnvironment(env)
    if merged:
        proc.setProcessChannelMode(QProcess.MergedChannels)
    return proc


class EngineProcess(QObject):
    """Runs one engine command; emits each protocol event and a final (status, state)."""

    received = pyqtSignal(object)  # protocol.Event (not "event": that is QObject.event)
    garbage = pyqtSignal(str)
    finished = pyqtSignal(str, object)  # status, RunState
    stop_step = pyqtSignal(str)  # "cancel", "terminate", "kill" as the escalation takes them

    def __init__(self, parent: Optional[QObject] = None, policy: StopPolicy = DEFAULT_POLICY) -> None:
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self.stream = EventStream(on_event=self.received.emit, on_garbage=self._on_garbage)
        self._stderr: List[str] = []
        self._crashed = False
        self._finished = False
        self.failure: Optional[tuple] = None  # (message, hint) when the run failed without an error event
        self.stopper = Escalation({StopStep.CANCEL: self._send_cancel, StopStep.TERMINATE: self._terminate,
                                   StopStep.KILL: self._kill}, policy, on_step=self._on_stop_step)
        self._stop_timer = QTimer(self)
        self._stop_timer.setSingleShot(True)
        self._stop_timer.timeout.connect(self._poll_stop)

    @property
    def proc(self) -> QProcess:
        """The started process (only used after :meth:`start`)."""
        assert self.process is not None
        return self.process

    @property
    def state(self) -> RunState:
        return self.stream.state

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    @property
    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def start(self, interpreter: str, args: List[str]) -> None:
        argv = request.engine_argv(interpreter, args)
        proc = engine_qprocess(self)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.process = proc
        log.info("starting engine: %s" % " ".join(argv))
        proc.start(argv[0], argv[1:])

    def cancel(self, policy: Optional[StopPolicy] = None) -> None:
        """Ask the engine to stop after its current batch; terminate, then kill, if it does not."""
        if not self.running:
            return
        if policy is not None:
            self.stopper.policy = policy
        self.stopper.request(time.monotonic())
        self._schedule_stop()

    def stop_and_wait(self, policy: StopPolicy) -> None:
        """Blocking stop for unload: the same escalation, shorter waits."""
        self.cancel(policy)
        while self.running:
            wait = self.stopper.next_due_in(time.monotonic())
            if self.proc.waitForFinished(int(1000 * (wait if wait is not None else 1.0)) + 50):
                break
            self._poll_stop()
            if wait is None:
                break

    def _schedule_stop(self) -> None:
        wait = self.stopper.next_due_in(time.monotonic())
        if wait is not None and self.running:
            self._stop_timer.start(int(wait * 1000) + 10)

    def _poll_stop(self) -> None:
        if self.running:
            self.stopper.poll(time.monotonic())
            self._schedule_stop()

    def _on_stop_step(self, step: StopStep) -> None:
        self.stop_step.emit(step.value)

    def _send_cancel(self) -> None:
        log.info("cancel requested")
        self.proc.write(protocol.cancel_message().encode("utf-8"))
        self.proc.waitForBytesWritten(1000)

    def _terminate(self) -> None:
        if self.running:
            log.warning("engine did not stop after cancel; terminating")
            self.proc.terminate()

    def _kill(self) -> None:
        if self.running:
            log.warning("engine did not terminate; killing")
            self.proc.kill()

    def _read_stdout(self) -> None:
        data = bytes(self.proc.readAllStandardOutput())
        if data:
            self.stream.feed(data)

    def _read_stderr(self) -> None:
        text = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")
        if text:
            self._stderr.append(text)
            if sum(len(t) for t in self._stderr) > 200000:
                del self._stderr[0]
            for line in text.rstrip().splitlines():
                log.info("engine: " + line)

    def _on_garbage(self, message: str) -> None:
        log.warning("ignored a malformed engine line: " + message)
        self.garbage.emit(message)

    def _on_error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._crashed = True
            self.failure = ("could not start the engine interpreter %r" % (self.proc.program(),), START_HINT)
            self._finish(None)

    def _on_finished(self, exit_code: int, exit_status) -> None:
        self._read_stdout()
        self._read_stderr()
        crashed = exit_status == QProcess.CrashExit
        self._crashed = self._crashed or crashed
        self._finish(exit_code)

    def _finish(self, exit_code: Optional[int]) -> None:
        if self._finished:
            return
        self._finished = True
        self._stop_timer.stop()
        self.stream.close()
        status = final_status(self.state, exit_code, self._crashed)
        if status == "failed" and self.stopper.requested and not self.state.errors and self.state.status == "":
            status = "cancelled"
        if status == "failed" and self.failure is None:
            self.failure = describe_exit(self.state, exit_code, self.stderr_text)
        log.info("engine finished: status %s, exit code %s" % (status, exit_code))
        self.finished.emit(status, self.state)


class JsonQuery(QObject):
    """A quick command that prints one JSON object (``info --json``, ``model show --json``, the
    engine status probe) run asynchronously.

    ``done`` carries (value dict or None, (message, hint) or None).
    """

    done = pyqtSignal(object, object)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self._reported = False
        self.command = ""

    def start(self, interpreter: str, args: List[str]) -> None:
        """``interpreter -m groundbreak ARGS``."""
        self.command = args[0] if args else ""
        try:
            argv = request.engine_argv(interpreter, args)
        except PluginError as exc:
            self._report_later(None, exc.pair())
            return
        self.start_argv(argv, self.command)

    def start_argv(self, argv: Sequence[str], command: str) -> None:
        self.command = command
        proc = engine_qprocess(self)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.process = proc
        proc.start(argv[0], list(argv[1:]))

    @property
    def proc(self) -> QProcess:
        assert self.process is not None
        return self.process

    def _report_later(self, value, error) -> None:
        # reported from the event loop, like every other outcome, so callers connect first
        QTimer.singleShot(0, lambda: self._report(value, error))

    def _on_error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._report(None, ("could not start the engine interpreter %r" % self.proc.program(), START_HINT))

    def _on_finished(self, exit_code: int, exit_status) -> None:
        out = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        err = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")
        if err.strip():
            log.info("engine %s: %s" % (self.command, err.strip()[-2000:]))
        if exit_status == QProcess.CrashExit or exit_code != 0:
            message, hint = cli_error(err.strip())
            failed = "engine %s failed (exit code %s): %s" % (self.command, exit_code, message or "no message")
            self._report(None, (failed, hint or "see the Groundbreak tab of the log panel"))
            return
        try:
            value = json.loads(out)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except ValueError:
            self._report(None, ("engine %s printed something that is not a JSON object: %.200s" % (self.command, out),
                                "check that the interpreter runs the Groundbreak engine"))
            return
        self._report(value, None)

    def _report(self, value, error) -> None:
        if not self._reported:
            self._reported = True
            self.done.emit(value, error)

    def kill(self) -> None:
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.proc.kill()
            self.proc.waitForFinished(1000)
