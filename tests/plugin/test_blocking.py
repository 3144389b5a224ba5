"""The blocking driver (used by Processing) against the fake engine: no QGIS needed."""

from __future__ import annotations

import json
import threading

from conftest import RECORDED

from plugin import blocking, request
from plugin.request import RunRequest


def run_request(tmp_path):
    return RunRequest(aois=("aoi.gpkg",), scenes=("a.tif",), out=str(tmp_path / "out.gpkg"))


def test_run_streams_events_and_writes_output(fake_engine, tmp_path):
    events = []
    status, state, failure = blocking.run_events(fake_engine, request.run_args(run_request(tmp_path)),
                                                 on_event=events.append)
    assert status == "ok" and failure is None
    assert sum(len(e.get("features")) for e in events if e.type == "features") == 6
    assert state.result["outputs"]["gpkg"] == str(tmp_path / "out.gpkg")
    assert (tmp_path / "out.gpkg").exists()
    logged = json.loads((tmp_path / "argv.jsonl").read_text().splitlines()[0])
    assert logged["argv"][:3] == ["-m", "groundbreak", "run"]
    assert logged["env_pythonpath"] is None and logged["unbuffered"] == "1"


def test_cancel_stops_the_engine_and_keeps_partial_results(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_DELAY", "0.2")
    first_features = threading.Event()

    def on_event(event):
        if event.type == "features":
            first_features.set()

    status, state, failure = blocking.run_events(fake_engine, request.run_args(run_request(tmp_path)),
                                                 is_canceled=first_features.is_set, on_event=on_event)
    assert status == "cancelled" and failure is None
    assert 1 <= state.features_received < 6
    assert (tmp_path / "out.gpkg").exists()


def test_error_event_becomes_the_failure(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_STREAM", str(RECORDED / "run_error.jsonl"))
    monkeypatch.setenv("GB_FAKE_EXIT", "1")
    status, state, failure = blocking.run_events(fake_engine, request.run_args(run_request(tmp_path)))
    assert status == "failed"
    assert "nir" in failure[0] and "--band-order" in failure[1]


def test_crash_mid_stream_is_a_failure_with_the_stderr_tail(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GB_FAKE_CRASH", "1")
    status, state, failure = blocking.run_events(fake_engine, request.run_args(run_request(tmp_path)))
    assert status == "failed"
    assert "134" in failure[0] and "simulated engine crash" in failure[0]


def test_missing_interpreter_is_a_failure_not_an_exception(tmp_path):
    status, _, failure = blocking.run_events(str(tmp_path / "nope" / "python"), ["model", "--json"])
    assert status == "failed" and "could not start" in failure[0]


def test_run_json_parses_info_and_reports_cli_errors(fake_engine, tmp_path):
    info = blocking.run_json(fake_engine, request.info_args(["/x/a.tif"]))
    assert info["scenes"][0]["bands"] == ["red", "green", "blue", "nir"]
    try:
        blocking.run_json(fake_engine, ["bogus"])
    except blocking.EngineCallError as exc:
        assert "exit code 2" in exc.message
    else:
        raise AssertionError("expected EngineCallError")


def test_a_hung_engine_is_terminated_by_the_shared_escalation(fake_engine, tmp_path, monkeypatch):
    from plugin.escalation import StopPolicy

    monkeypatch.setenv("GB_FAKE_DELAY", "0.5")
    monkeypatch.setenv("GB_FAKE_IGNORE_CANCEL", "1")
    status, state, failure = blocking.run_events(
        fake_engine, request.run_args(run_request(tmp_path)), is_canceled=lambda: True,
        policy=StopPolicy(cancel_grace_s=0.3, terminate_grace_s=0.3))
    # the engine ignored the cancel line, so it was terminated: the run counts as cancelled
    assert status == "cancelled" and state.status == ""


def slow_interpreter(tmp_path, seconds):
    """An "interpreter" that answers nothing for ``seconds`` (a long timeline build stands in)."""
    script = tmp_path / "slow-python"
    script.write_text("#!/bin/sh\nexec sleep %d\n" % seconds)
    script.chmod(0o755)
    return str(script)


def test_run_json_is_stopped_by_cancel_and_by_its_timeout(tmp_path):
    import time

    asked = []

    def cancel_after_half_a_second():
        asked.append(time.monotonic())
        return asked[-1] - asked[0] > 0.5

    t0 = time.monotonic()
    try:
        blocking.run_json(slow_interpreter(tmp_path, 60), request.timeline_args("run.gpkg"),
                          is_canceled=cancel_after_half_a_second, poll_s=0.05)
    except blocking.EngineCallError as exc:
        assert exc.message == "engine timeline was cancelled"
    else:
        raise AssertionError("expected EngineCallError")
    assert 0.5 < time.monotonic() - t0 < 10 and len(asked) > 2  # polled, then terminated at once
    t0 = time.monotonic()
    try:
        blocking.run_json(slow_interpreter(tmp_path, 60), ["info", "--json"], timeout_s=0.5, poll_s=0.05)
    except blocking.EngineCallError as exc:
        assert "took longer than 0 s" in exc.message or "took longer than 1 s" in exc.message, exc.message
    else:
        raise AssertionError("expected EngineCallError")
    assert time.monotonic() - t0 < 10


def test_timeline_args_and_their_refusals():
    assert request.timeline_args("r.gpkg") == ["timeline", "--in", "r.gpkg", "--json"]
    assert request.timeline_args("r.gpkg", enter=0.8, exit_=0.55, min_revisits=3, end_revisits=2, smart_dir="s") == [
        "timeline", "--in", "r.gpkg", "--enter", "0.8", "--exit", "0.55", "--min-revisits", "3", "--end-revisits",
        "2", "--smart", "s", "--json"]
    for kwargs, words in (({"enter": 0.5, "exit_": 0.7}, "above the enter"), ({"enter": 1.5}, "outside"),
                          ({"min_revisits": 0}, "at least 1")):
        try:
            request.timeline_args("r.gpkg", **kwargs)
        except request.RequestError as exc:
            assert words in exc.message, exc.message
        else:
            raise AssertionError("expected RequestError for %s" % kwargs)
