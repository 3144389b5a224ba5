"""'Set up engine': creates the engine's virtualenv and installs the engine into it.

Steps (each a child process, reported one by one): ``python3 -m venv VENV``, upgrade pip, then
``pip install torch==2.13.0 <engine>`` where <engine> is the wheel bundled in the plugin zip
(``engine/*.whl``) or, from a checkout, the repository itself. torch is always pinned: an unpinned
torch can resolve to a multi-GB CUDA build.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, pyqtSignal

from . import log, request

TORCH_PIN = "torch==2.13.0"
# The CPU wheel index keeps pip from fetching CUDA libraries on Linux; GROUNDBREAK_TORCH_INDEX
# overrides it (an empty value uses only the pip configuration, e.g. a local mirror).
TORCH_INDEX = os.environ.get("GROUNDBREAK_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")


@dataclass(frozen=True)
class Step:
    title: str
    argv: Tuple[str, ...]


def engine_source() -> Optional[str]:
    wheels = sorted(glob.glob(os.path.join(str(request.PLUGIN_DIR), "engine", "groundbreak-*.whl")))
    if wheels:
        return wheels[-1]
    root = request.checkout_root()
    return str(root) if root is not None else None


def base_python() -> Optional[str]:
    """A system Python to create the venv from (never QGIS's sys.executable on Windows/macOS)."""
    for name in ("python3.11", "python3.12", "python3.10", "python3", "python"):
        found = shutil.which(name)
        if found:
            return found
    return None


def plan_steps(venv_dir: str, python: Optional[str] = None, source: Optional[str] = None,
               extra_index: Optional[str] = TORCH_INDEX) -> List[Step]:
    python = python or base_python()
    source = source or engine_source()
    if not python:
        raise request.RequestError("no Python 3.10+ found on PATH to create the engine environment",
                                   "install Python 3.11 and try again, or set the engine's Python in settings")
    if not source:
        raise request.RequestError("this plugin build carries no engine wheel and is not a checkout",
                                   "reinstall the plugin from a zip built by scripts/build_plugin.py")
    vpy = str(request.venv_python(Path(venv_dir)))
    pip = [vpy, "-m", "pip", "install", "--disable-pip-version-check"]
    if extra_index:
        pip += ["--extra-index-url", extra_index]
    return [
        Step("Creating the virtual environment %s" % venv_dir, (python, "-m", "venv", venv_dir)),
        Step("Installing torch (CPU) and the Groundbreak engine", tuple(pip + [TORCH_PIN, source])),
        Step("Checking the engine", (vpy, "-m", "groundbreak", "--help")),
    ]


class EngineSetup(QObject):
    step_started = pyqtSignal(int, int, str)  # index, total, title
    output = pyqtSignal(str)
    finished = pyqtSignal(bool, str)  # ok, message (says what failed and how to fix it)

    def __init__(self, steps: List[Step], parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.steps = steps
        self.index = -1
        self.process: Optional[QProcess] = None
        self.log_lines: List[str] = []
        self.cancelled = False

    def start(self) -> None:
        self._next()

    def cancel(self) -> None:
        self.cancelled = True
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.process.kill()

    def _next(self) -> None:
        self.index += 1
        if self.index >= len(self.steps):
            self.finished.emit(True, "the engine is ready")
            return
        step = self.steps[self.index]
        self.step_started.emit(self.index, len(self.steps), step.title)
        log.info("setup: %s: %s" % (step.title, " ".join(step.argv)))
        proc = QProcess(self)
        env = QProcessEnvironment()
        for key, value in request.clean_environment().items():
            env.insert(key, value)
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._done)
        proc.errorOccurred.connect(self._error)
        self.process = proc
        proc.start(step.argv[0], list(step.argv[1:]))

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in text.splitlines():
            self.log_lines.append(line)
            log.info("setup: " + line)
            self.output.emit(line)

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._fail("could not start %s" % self.process.program())

    def _done(self, exit_code: int, exit_status) -> None:
        self._read()
        if self.cancelled:
            self._fail("cancelled")
        elif exit_status != QProcess.NormalExit or exit_code != 0:
            tail = "; ".join(self.log_lines[-3:])
            self._fail("exit code %s: %s" % (exit_code, tail))
        else:
            self._next()

    def _fail(self, why: str) -> None:
        step = self.steps[self.index]
        self.finished.emit(False, "engine setup failed at '%s' (%s). See the Groundbreak log tab; fix the cause "
                                  "(network, disk space, Python version) and run Set up engine again." % (step.title, why))
