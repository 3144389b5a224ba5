"""Helpers shared by the sub-commands: the reporter, cancellation, the model, the plan."""

from __future__ import annotations

import os
import signal
import stat
import sys
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, TextIO

from ..errors import GroundbreakError
from ..model import ModelPackage, load_model_package
from ..pipeline import RunResult
from ..plan import Plan, plan_inputs
from ..reporter import CancelToken, Reporter, watch_stdin
from .options import mask_rules_from

VARIADIC = ("--scenes", "--aoi", "--labels", "--negatives", "--holdout-labels", "--holdout-scenes",
            "--holdout-negatives")


def expand_variadic(args: Sequence[str]) -> List[str]:
    """Let ``--scenes a.tif b.tif`` mean ``--scenes a.tif --scenes b.tif`` (shells expand globs
    into many words; click options take one value each)."""
    out: List[str] = []
    current: Optional[str] = None
    for arg in args:
        if arg in VARIADIC:
            current = arg
            out.append(arg)
            continue
        if current is not None and not arg.startswith("-") and out and out[-1] != current:
            out.extend([current, arg])
            continue
        if arg.startswith("-"):
            current = None
        out.append(arg)
    return out


def open_model(model_path: Optional[str], reporter: Reporter) -> ModelPackage:
    """Load (and hash-check) the model package once per command, and greet the client with it.

    A package that fails to load still gets a ``hello`` (with no model) before the error event."""
    try:
        model = load_model_package(model_path)
    except Exception:
        reporter.hello(None)
        raise
    reporter.hello(model.provenance())
    return model


def plan_from(params: Dict[str, Any], model: ModelPackage, reporter: Reporter) -> Plan:
    """The plan for a command's input options (``options.input_options``); consumes them from ``params``."""
    rules = mask_rules_from(params)
    return plan_inputs(list(params.pop("aois")), list(params.pop("scenes")), model,
                       aoi_id_field=params.pop("aoi_id_field"), band_order=params.pop("band_order"),
                       date=params.pop("date"), grid_epsg=params.pop("grid_epsg"), mask_rules=rules,
                       allow_resample=params.pop("allow_resample"), reporter=reporter)


def aggregate(result: RunResult, reporter: Reporter) -> RunResult:
    """The aggregate stage after a multi-date run: sites with dates into the run's GeoPackage. A
    failure here is a warning: the detections are written and ``groundbreak timeline`` can retry."""
    from ..timeline import build_timeline

    reporter.stage("aggregate", "building sites with dates from %s" % result.output)
    try:
        built = build_timeline(result.output)
    except GroundbreakError as exc:
        reporter.warning(exc.code, "no sites were built: %s" % exc.message,
                         exc.hint or "run `groundbreak timeline --in %s` once it is fixed" % result.output)
        return result
    summary = {"sites": len(built.sites), "dates": len(built.dates), "ongoing": sum(s.ongoing for s in built.sites),
               "params": built.params.to_dict()}
    return replace(result, stats=replace(result.stats, timeline=summary))


def make_reporter(events: Optional[str], command: str) -> Reporter:
    if events != "jsonl":
        return Reporter(None, command=command)
    return Reporter(_protocol_stream(), command=command)


def _protocol_stream() -> TextIO:
    """Reserve stdout for protocol lines only.

    The real stdout file descriptor is duplicated for the reporter, then fd 1 (and ``sys.stdout``)
    are pointed at stderr, so nothing else — a library's progress bar, a C library's log line —
    can ever write into the protocol stream.
    """
    sys.stdout.flush()
    try:
        if sys.stdout.fileno() != 1:
            return sys.stdout
        fd = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # captured stdout (tests, embedding): leave it
        return sys.stdout
    stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stdout = sys.stderr
    return stream


def install_cancel(events: Optional[str]) -> CancelToken:
    """Cancel on SIGTERM/SIGINT, and (for clients) on a cancel line or EOF on a piped stdin."""
    token = CancelToken()

    def _handler(signum, _frame):
        token.cancel("signal %d" % signum)

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    if events == "jsonl" and _stdin_is_pipe():
        watch_stdin(token)
    return token


def _stdin_is_pipe() -> bool:
    # /dev/null or a terminal must not cancel a run the moment it starts; only a client's pipe does.
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
