"""The wire protocol as the engine uses it: validation, encoding, parsing, cancel lines, chunked input."""

from __future__ import annotations

import json
import math

import pytest

from groundbreak.protocol import (
    PROTOCOL_VERSION,
    REQUIRED,
    LineBuffer,
    ProtocolError,
    cancel_message,
    encode,
    is_cancel,
    make_event,
    parse_line,
)


def test_every_type_round_trips():
    samples = {
        "hello": dict(engine="0.1.0", command="run", model=None, pid=1),
        "stage": dict(stage="screen", message="m"),
        "progress": dict(stage="infer", done=1, total=3, counts={"inferred": 1}),
        "features": dict(crs="EPSG:32614", features=[]),
        "warning": dict(code="c", message="m", hint=""),
        "error": dict(code="c", message="m", hint="h", retryable=False),
        "result": dict(outputs={}, stats={}, cost={}),
        "done": dict(status="ok", exit_code=0),
    }
    assert set(samples) == set(REQUIRED)
    for seq, (type_, data) in enumerate(samples.items()):
        line = encode(make_event(type_, seq, **data))
        assert "\n" not in line
        event = parse_line(line)
        assert (event.type, event.seq, event.v, event.known) == (type_, seq, PROTOCOL_VERSION, True)
        assert event.data == data


@pytest.mark.parametrize("type_, data", [
    ("stage", dict(stage="nope", message="m")),
    ("progress", dict(stage="infer", done=-1, total=3, counts={})),
    ("done", dict(status="weird", exit_code=0)),
    ("error", dict(code="c", message="m", hint="h", retryable="no")),
    ("hello", dict(engine="x")),
    ("bogus", dict()),
])
def test_invalid_events_are_refused_by_the_engine(type_, data):
    with pytest.raises(ProtocolError):
        make_event(type_, 0, **data)


def test_nan_is_not_json():
    with pytest.raises(ValueError):
        encode(make_event("result", 0, outputs={}, stats={"x": math.nan}, cost={}))


def test_numpy_and_paths_encode():
    from pathlib import Path

    import numpy as np

    line = encode(make_event("result", 0, outputs={"gpkg": Path("/x/out.gpkg")}, stats={"n": np.int64(3)}, cost={}))
    assert json.loads(line)["stats"]["n"] == 3 and json.loads(line)["outputs"]["gpkg"] == "/x/out.gpkg"


def test_parsing_is_strict_but_forward_compatible():
    assert parse_line("  \n") is None
    future_type = parse_line(json.dumps({"v": 1, "type": "telemetry", "seq": 4, "x": 1}))
    assert future_type.known is False and future_type.get("x") == 1
    extra = parse_line(json.dumps({"v": 1, "type": "done", "seq": 0, "status": "ok", "exit_code": 0, "new": 1}))
    assert extra.get("new") == 1
    for bad in ("not json", "[1]", json.dumps({"v": 1, "seq": 0}), json.dumps({"v": 1, "type": "done", "seq": -1}),
                json.dumps({"type": "done", "seq": 0, "status": "ok", "exit_code": 0}),
                json.dumps({"v": PROTOCOL_VERSION + 1, "type": "done", "seq": 0, "status": "ok", "exit_code": 0}),
                json.dumps({"v": 1, "type": "done", "seq": 0, "status": "ok"})):
        with pytest.raises(ProtocolError):
            parse_line(bad)
    with pytest.raises(ProtocolError):
        parse_line(b"\xff\xfe")


def test_cancel_lines():
    assert is_cancel(cancel_message()) and is_cancel('{"type":"cancel"}')
    assert not is_cancel("cancel") and not is_cancel('{"type":"done"}') and not is_cancel("")


def test_line_buffer_reassembles_chunks():
    buf = LineBuffer()
    line = encode(make_event("stage", 0, stage="plan", message="é" * 10)).encode() + b"\n"
    out = []
    for i in range(0, len(line) * 2, 7):
        out.extend(buf.feed((line * 2)[i:i + 7]))
    assert [parse_line(x).seq for x in out] == [0, 0]
    assert buf.feed(b'{"partial"') == () and buf.flush() == (b'{"partial"',)
