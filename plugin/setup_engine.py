"""'Set up engine': a new virtualenv with the engine, torch (CPU) and OpenVINO, in steps a user understands.

1. *Checking the package index*: an extra index (the CPU torch wheels) is probed once with a short
   timeout; when it does not answer, pip's own index is used at once (and the dialog says so) instead
   of pip retrying a dead host for every package.
2. *Creating the environment*: ``python3 -m venv`` into a new folder beside the current engine.
3. *Working out what to install*: ``pip install --dry-run --report``, so the install can count
   "N of M packages".
4. *Downloading and installing*: ``pip install torch==2.13.0 <engine>[fast]`` (torch always pinned:
   an unpinned torch can resolve to a multi-GB CUDA build; ``fast`` is the engine's OpenVINO extra),
   or for an inference-only engine ``pip install <engine>[openvino]``: no torch, no NNCF, no extra
   index (it runs model packages that carry their OpenVINO IR, as the default model does).
5. *Checking the engine*: the engine's status probe in the new environment (version, OpenVINO).

Every child process is built by :func:`engine_process.engine_qprocess` (the clean environment).
The new environment replaces the configured one only when every step passed: a failed or cancelled
set-up deletes its folder and leaves the previous engine as it was.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from qgis.PyQt.QtCore import QObject, QProcess, QTimer, pyqtSignal

from . import log, request
from .engine_process import engine_qprocess
from .errors import PluginError
from .pip_progress import PipProgress, human_size, report_packages

TORCH_PIN = "torch==2.13.0"
# The CPU wheel index keeps pip from fetching CUDA libraries on Linux; GROUNDBREAK_TORCH_INDEX
# overrides it (an empty value uses only the pip configuration, e.g. a local mirror).
TORCH_INDEX = os.environ.get("GROUNDBREAK_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
PROBE_TIMEOUT_S = 3.0
VENV_PREFIX = "engine-"

# Any HTTP answer (even 404) means the host is there; only no answer means "unreachable".
PROBE_SCRIPT = """
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()
except urllib.error.HTTPError:
    pass
except Exception as exc:
    print(getattr(exc, "reason", None) or exc)
    sys.exit(1)
"""


class EngineKind(Enum):
    FULL = "full"
    INFERENCE = "inference"


@dataclass(frozen=True)
class KindInfo:
    title: str
    extra: str  # the engine's optional dependencies (pyproject.toml)
    packages: Tuple[str, ...]  # installed beside the engine
    size: str  # the environment on disk, measured on Linux x86_64 (2026-12)
    what: str


KINDS = {
    EngineKind.FULL: KindInfo(
        "Full engine", "fast", (TORCH_PIN,), "about 1.6 GB",
        "every runtime (torch CPU, OpenVINO), training and int8 calibration (NNCF)"),
    EngineKind.INFERENCE: KindInfo(
        "Inference only", "openvino", (), "about 600 MB",
        "OpenVINO without torch: runs model packages that carry an OpenVINO IR (the default model does); "
        "cannot train, quantize or run packages without an IR"),
}


class SetupError(PluginError):
    """Set-up cannot start (no Python to build the environment from, no engine to install)."""


@dataclass(frozen=True)
class SetupPlan:
    base_python: str
    venv_dir: str  # a new folder: the current engine is never touched until the new one works
    source: str  # the bundled engine wheel, or a checkout
    extra_index: Optional[str] = TORCH_INDEX
    probe_timeout_s: float = PROBE_TIMEOUT_S
    packages: Tuple[str, ...] = (TORCH_PIN,)  # installed with the engine
    kind: EngineKind = EngineKind.FULL

    @property
    def python(self) -> str:
        return str(request.venv_python(Path(self.venv_dir)))

    @property
    def requirement(self) -> str:
        return "%s[%s]" % (self.source, KINDS[self.kind].extra)

    def pip_install(self, use_index: bool, *extra: str) -> List[str]:
        # --no-compile: byte-compiling torch's thousands of modules costs tens of seconds on 2 cores;
        # Python writes the caches itself on first import
        argv = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
                "--no-compile"]
        if use_index and self.extra_index:
            argv += ["--extra-index-url", self.extra_index]
        return argv + list(extra) + list(self.packages) + [self.requirement]


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


def new_venv_dir(root: str) -> str:
    """``ROOT/engine-YYYYmmdd-HHMMSS``: beside, never over, the engine in use."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, VENV_PREFIX + stamp)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(root, "%s%s-%d" % (VENV_PREFIX, stamp, n))
    return path


def plan_setup(root: str, python: Optional[str] = None, source: Optional[str] = None,
               extra_index: Optional[str] = TORCH_INDEX, kind: EngineKind = EngineKind.FULL) -> SetupPlan:
    python = python or base_python()
    source = source or engine_source()
    if not python:
        raise SetupError("no Python 3.10+ found on PATH to create the engine environment",
                         "install Python 3.11 and try again, or set the engine's Python in settings")
    if not source:
        raise SetupError("this plugin build carries no engine wheel and is not a checkout",
                         "reinstall the plugin from a zip built by scripts/build_plugin.py")
    info = KINDS[kind]
    # the extra index only serves torch's CPU wheels: an engine without torch never asks it
    index = (extra_index or None) if TORCH_PIN in info.packages else None
    return SetupPlan(base_python=python, venv_dir=new_venv_dir(root), source=source, extra_index=index,
                     packages=info.packages, kind=kind)


def managed_venvs(root: str) -> List[str]:
    """Engine environments "Set up engine" made under ROOT, oldest first."""
    found = sorted(glob.glob(os.path.join(root, VENV_PREFIX + "*")))
    return [p for p in found if os.path.isdir(p) and os.path.exists(request.venv_python(Path(p)))]


STEPS = ("Checking the package index", "Creating the environment", "Working out what to install",
         "Downloading and installing", "Checking the engine")


class EngineSetup(QObject):
    """Runs a :class:`SetupPlan` step by step, each step a child process."""

    step_started = pyqtSignal(int, int, str)  # index, total, title
    detail = pyqtSignal(str, float)  # what is happening now, fraction of the whole set-up (0..1)
    output = pyqtSignal(str)  # every line of every step (the full log)
    finished = pyqtSignal(bool, str)  # ok, message (what was done, or what failed and what to do)

    def __init__(self, plan: SetupPlan, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.plan = plan
        self.index = -1
        self.process: Optional[QProcess] = None
        self.log_lines: List[str] = []
        self.cancelled = False
        self.use_index = False
        self.index_note = ""
        self.pip = PipProgress()
        self.packages: list = []
        self.engine_status = ""
        self.seconds: List[Tuple[str, float]] = []
        self._t0 = 0.0
        self._step_t0 = 0.0
        self._probe_timer = QTimer(self)
        self._probe_timer.setSingleShot(True)
        self._probe_timer.timeout.connect(self._probe_timed_out)
        self._report = os.path.join(plan.venv_dir + ".report.json")
        self._done = False
        self._partial = b""

    # ------------------------------------------------------------ driving
    def start(self) -> None:
        self._t0 = time.monotonic()
        self._next()

    def cancel(self) -> None:
        self.cancelled = True
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.process.kill()

    def _next(self) -> None:
        if self.index >= 0:
            self.seconds.append((STEPS[self.index], time.monotonic() - self._step_t0))
        self.index += 1
        if self.index >= len(STEPS):
            self._succeed()
            return
        self._step_t0 = time.monotonic()
        self.step_started.emit(self.index, len(STEPS), STEPS[self.index])
        self.detail.emit("", self.index / len(STEPS))
        [self._probe, self._venv, self._resolve, self._install, self._check][self.index]()

    def _run(self, argv: List[str], on_done: Callable[[int], None], on_line: Optional[Callable[[str], None]] = None
             ) -> None:
        self._log("$ " + " ".join(argv))
        self._partial = b""
        proc = engine_qprocess(self, merged=True)
        proc.readyReadStandardOutput.connect(lambda: self._read(proc, on_line))
        proc.finished.connect(lambda code, status: self._finished_step(proc, code, status, on_done, on_line))
        proc.errorOccurred.connect(lambda error: self._start_error(proc, error))
        self.process = proc
        proc.start(argv[0], argv[1:])

    def _read(self, proc: QProcess, on_line, final: bool = False) -> None:
        # output arrives in chunks that may end mid-line: keep the partial line for the next chunk
        self._partial += bytes(proc.readAllStandardOutput())
        *lines, self._partial = self._partial.split(b"\n")
        if final and self._partial:
            lines, self._partial = lines + [self._partial], b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self._log(line)
            if on_line is not None:
                on_line(line)

    def _finished_step(self, proc: QProcess, code: int, status, on_done, on_line) -> None:
        self._read(proc, on_line, final=True)
        if self._done:
            return
        if self.cancelled:
            self._fail("cancelled", "run Set up engine again when you are ready")
            return
        on_done(code if status == QProcess.NormalExit else -1)

    def _start_error(self, proc: QProcess, error) -> None:
        if error == QProcess.FailedToStart and not self._done:
            self._fail("could not start %s" % proc.program(), "check that this Python exists and can be run")

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        log.info("setup: " + line)
        self.output.emit(line)

    # ------------------------------------------------------------ steps
    def _probe(self) -> None:
        if not self.plan.extra_index:
            self.index_note = "using pip's configured index (no extra index asked for)"
            self._log(self.index_note)
            self._next()
            return
        self.detail.emit("asking %s (at most %.0f s)" % (self.plan.extra_index, self.plan.probe_timeout_s), 0.0)
        self._probe_timer.start(int((self.plan.probe_timeout_s + 1.0) * 1000))
        self._run([self.plan.base_python, "-c", PROBE_SCRIPT, self.plan.extra_index, str(self.plan.probe_timeout_s)],
                  self._probe_done)

    def _probe_timed_out(self) -> None:
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self._log("no answer within %.0f s" % self.plan.probe_timeout_s)
            self.process.kill()  # _probe_done sees a failed probe

    def _probe_done(self, code: int) -> None:
        self._probe_timer.stop()
        self.use_index = code == 0
        why = self.log_lines[-1] if code != 0 and self.log_lines else ""
        if self.use_index:
            self.index_note = "using the CPU torch index %s" % self.plan.extra_index
        else:
            self.index_note = "%s does not answer (%s): using pip's default index instead" % (
                self.plan.extra_index, why or "no answer")
        self._log(self.index_note)
        self._next()

    def _venv(self) -> None:
        os.makedirs(os.path.dirname(self.plan.venv_dir) or ".", exist_ok=True)
        self.detail.emit("python -m venv %s" % self.plan.venv_dir, self.index / len(STEPS))
        self._run([self.plan.base_python, "-m", "venv", self.plan.venv_dir],
                  lambda code: self._check_code(code, "could not create the environment",
                                                "on Debian: apt-get install python3-venv; check the disk space"))

    def _resolve(self) -> None:
        self.detail.emit("asking pip which packages the engine needs", self.index / len(STEPS))
        argv = self.plan.pip_install(self.use_index, "--dry-run", "--quiet", "--report", self._report)
        self._run(argv, self._resolved, self._pip_line)

    def _resolved(self, code: int) -> None:
        if code != 0:
            self._fail_pip("pip could not work out what to install")
            return
        try:
            self.packages = report_packages(self._report)
        except (OSError, ValueError) as exc:
            self._log("could not read pip's report: %s" % exc)
            self.packages = []
        self.pip = PipProgress(total=len(self.packages))
        known = [p.size for p in self.packages if p.size]
        size = (" (%s of them on this machine already)" % human_size(sum(known))) if known else ""
        self._log("%d packages to install%s" % (len(self.packages), size))
        self._next()

    def _install(self) -> None:
        self.detail.emit(self.pip.describe(), self.index / len(STEPS))
        self._run(self.plan.pip_install(self.use_index), self._installed, self._pip_line)

    def _pip_line(self, line: str) -> None:
        if self.pip.feed(line) and self.index == STEPS.index("Downloading and installing"):
            self.detail.emit(self.pip.describe(), (self.index + self.pip.fraction()) / len(STEPS))

    def _installed(self, code: int) -> None:
        if code != 0:
            self._fail_pip("pip could not install the engine")
            return
        self._next()

    def _check(self) -> None:
        from .engine_status import status_argv

        self.detail.emit("starting the new engine once", self.index / len(STEPS))
        self._run(status_argv(self.plan.python), self._checked)

    def _checked(self, code: int) -> None:
        if code != 0:
            self._fail("the new engine does not start (exit code %s): %s" % (code, self._tail()),
                       "see the full log; report it with the log attached")
            return
        self.engine_status = self.log_lines[-1] if self.log_lines else ""
        self._next()

    # ------------------------------------------------------------ outcome
    def _check_code(self, code: int, what: str, hint: str) -> None:
        if code != 0:
            self._fail("%s (exit code %s): %s" % (what, code, self._tail()), hint)
        else:
            self._next()

    def _fail_pip(self, what: str) -> None:
        reason = self.pip.errors[-1] if self.pip.errors else self._tail()
        self._fail("%s: %s" % (what, reason), "check the network (or a local package mirror in pip's configuration) "
                   "and the free disk space (about 2 GB), then run Set up engine again")

    def _tail(self) -> str:
        lines = [line for line in self.log_lines[-6:] if line.strip() and not line.startswith("$ ")]
        return " / ".join(lines[-3:])[-500:]

    def _succeed(self) -> None:
        self._done = True
        self._cleanup_report()
        total = time.monotonic() - self._t0
        self.finished.emit(True, "engine ready in %.0f s: %s (%s)" % (total, self.plan.venv_dir, self.index_note))

    def _fail(self, why: str, hint: str) -> None:
        if self._done:
            return
        self._done = True
        self._probe_timer.stop()
        title = STEPS[self.index] if 0 <= self.index < len(STEPS) else "set-up"
        self._cleanup_report()
        # never leave a half-made environment behind; the engine in use was not touched
        shutil.rmtree(self.plan.venv_dir, ignore_errors=True)
        message = "Engine set-up failed at '%s': %s. Hint: %s. The engine you had before is unchanged." % (
            title, why, hint)
        log.critical(message)
        self.finished.emit(False, message)

    def _cleanup_report(self) -> None:
        try:
            os.remove(self._report)
        except OSError:
            pass
