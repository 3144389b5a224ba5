"""The engine as an asynchronous QProcess on the main thread (the live dock's driver).

Events arrive through Qt signals as the engine prints them, so features reach the map while the
run is going. A crash, a hang or garbage on stdout ends the run with a report; it never raises
into QGIS.
"""

from __future__ import annotations

from typing import List, Optional

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from . import log, protocol, request
from .stream import EventStream, RunState, describe_exit, final_status

# Cancel escalation: the engine stops between batches; a batch on 2 cores takes seconds, so wait
# that long before terminating, then kill.
TERMINATE_AFTER_MS = 20000
KILL_AFTER_MS = 5000



def engine_qprocess(parent) -> QProcess:
    """A QProcess with the engine's clean environment (no QGIS PYTHONHOME, GDAL_DATA, PROJ_LIB …)."""
    proc = QProcess(parent)
    env = QProcessEnvironment()
    for key, value in request.clean_environment().items():
        env.insert(key, value)
    proc.setProcessEnvironment(env)
    return proc

class EngineProcess(QObject):
    """Runs one engine command; emits each protocol event and a final (status, state)."""

    received = pyqtSignal(object)  # protocol.Event (not "event": that is QObject.event)
    garbage = pyqtSignal(str)
    finished = pyqtSignal(str, object)  # status, RunState

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self.stream = EventStream(on_event=self.received.emit, on_garbage=self._on_garbage)
        self._stderr: List[str] = []
        self._cancel_requested = False
        self._crashed = False
        self._finished = False
        self.failure: Optional[tuple] = None  # (message, hint) when the run failed without an error event
        self._terminate_timer = QTimer(self)
        self._terminate_timer.setSingleShot(True)
        self._terminate_timer.timeout.connect(self._terminate)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

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

    def cancel(self) -> None:
        """Ask the engine to stop after its current batch; escalate if it does not."""
        if not self.running or self._cancel_requested:
            return
        self._cancel_requested = True
        log.info("cancel requested")
        self.process.write(protocol.cancel_message().encode("utf-8"))
        self.process.waitForBytesWritten(1000)
        self._terminate_timer.start(TERMINATE_AFTER_MS)

    def _terminate(self) -> None:
        if self.running:
            log.warning("engine did not stop after cancel; terminating")
            self.process.terminate()
            self._kill_timer.start(KILL_AFTER_MS)

    def _kill(self) -> None:
        if self.running:
            log.warning("engine did not terminate; killing")
            self.process.kill()

    def _read_stdout(self) -> None:
        data = bytes(self.process.readAllStandardOutput())
        if data:
            self.stream.feed(data)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
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
            self.failure = (
                "could not start the engine interpreter %r" % (self.process.program(),),
                "set the engine's Python in Groundbreak settings, or use 'Set up engine'",
            )
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
        self._terminate_timer.stop()
        self._kill_timer.stop()
        self.stream.close()
        status = final_status(self.state, exit_code, self._crashed)
        if status == "failed" and self._cancel_requested and not self.state.errors and self.state.status == "":
            status = "cancelled"
        if status == "failed" and self.failure is None:
            self.failure = describe_exit(self.state, exit_code, self.stderr_text)
        log.info("engine finished: status %s, exit code %s" % (status, exit_code))
        self.finished.emit(status, self.state)


class JsonQuery(QObject):
    """A quick ``--json`` engine command (``info``, ``model``) run asynchronously.

    ``done`` carries (value dict or None, (message, hint) or None).
    """

    done = pyqtSignal(object, object)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self._reported = False
        self.command = ""

    def start(self, interpreter: str, args: List[str]) -> None:
        self.command = args[0] if args else ""
        try:
            argv = request.engine_argv(interpreter, args)
        except request.RequestError as exc:
            # reported from the event loop, like every other outcome, so callers connect first
            failure = (exc.message, exc.hint)
            QTimer.singleShot(0, lambda: self._report(None, failure))
            return
        proc = engine_qprocess(self)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.process = proc
        proc.start(argv[0], argv[1:])

    def _on_error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._report(None, ("could not start the engine interpreter %r" % self.process.program(),
                                "set the engine's Python in Groundbreak settings, or use 'Set up engine'"))

    def _on_finished(self, exit_code: int, exit_status) -> None:
        import json

        out = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        err = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        if err.strip():
            log.info("engine %s: %s" % (self.command, err.strip()[-2000:]))
        if exit_status == QProcess.CrashExit or exit_code != 0:
            from .blocking import _cli_error

            message, hint = _cli_error(err.strip())
            self._report(None, ("engine %s failed (exit code %s): %s" % (self.command, exit_code, message or "no message"),
                                hint or "see the Groundbreak tab of the log panel"))
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
