"""The reporter: protocol events on a stream, warnings kept, cancel from stdin."""

from __future__ import annotations

import io
import time

from groundbreak.protocol import cancel_message, parse_line
from groundbreak.reporter import CancelToken, Reporter, watch_stdin


def test_events_on_the_stream_are_protocol_lines_with_increasing_seq():
    out = io.StringIO()
    seen = []
    r = Reporter(out, command="run", listener=seen.append)
    r.hello({"model_id": "m"})
    r.stage("plan", "reading")
    r.progress("infer", 1, 2, {"inferred": 1})
    r.features("EPSG:32614", [])  # an empty batch sends nothing
    r.features("EPSG:32614", [{"type": "Feature", "geometry": None, "properties": {"chip_id": "x"}}])
    r.warning("w", "careful", "do this")
    r.result({"gpkg": "out.gpkg"}, {"n": 1}, {"run_usd": 0.0})
    r.done("ok", 0)
    events = [parse_line(line) for line in out.getvalue().splitlines()]
    assert [e.type for e in events] == ["hello", "stage", "progress", "features", "warning", "result", "done"]
    assert [e.seq for e in events] == list(range(7))
    assert [e.type for e in seen] == [e.type for e in events]
    assert events[0].get("command") == "run" and events[0].get("pid") > 0
    assert r.warnings == [{"code": "w", "message": "careful", "hint": "do this"}]
    assert r.streaming


def test_without_a_stream_nothing_is_printed(capsys):
    r = Reporter()
    r.stage("plan", "x")
    r.done("ok", 0)
    assert capsys.readouterr().out == "" and not r.streaming


def test_a_client_that_went_away_does_not_stop_the_run():
    class Closed(io.StringIO):
        def write(self, _):
            raise BrokenPipeError

    r = Reporter(Closed())
    r.stage("plan", "x")  # no exception
    assert not r.streaming
    r.done("ok", 0)


def _wait(token: CancelToken) -> bool:
    for _ in range(200):
        if token.cancelled:
            return True
        time.sleep(0.01)
    return False


def test_cancel_message_on_stdin():
    token = CancelToken()
    watch_stdin(token, io.StringIO("not json\n{\"type\":\"progress\"}\n" + cancel_message() + "more\n"))
    assert _wait(token) and token.reason == "cancel message on stdin"


def test_closing_stdin_cancels():
    token = CancelToken()
    watch_stdin(token, io.StringIO("garbage\n"))
    assert _wait(token) and token.reason == "stdin closed"


def test_first_reason_wins():
    token = CancelToken()
    token.cancel("signal 15")
    token.cancel("stdin closed")
    assert token.reason == "signal 15"
