"""Event parsing and robustness against garbage and truncated engine output: no QGIS needed."""

from __future__ import annotations

import pytest
from conftest import RECORDED

from plugin import protocol
from plugin.stream import EventStream, describe_exit, final_status, overall_percent, valid_features


def replay(name, chunk_size=None):
    data = (RECORDED / name).read_bytes()
    seen, garbage = [], []
    stream = EventStream(on_event=seen.append, on_garbage=garbage.append)
    if chunk_size is None:
        stream.feed(data)
    else:
        for i in range(0, len(data), chunk_size):
            stream.feed(data[i:i + chunk_size])
    stream.close()
    return stream.state, seen, garbage


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 4096])
def test_normal_run_gives_the_same_events_however_it_is_chunked(chunk_size):
    state, seen, garbage = replay("run_ok.jsonl", chunk_size)
    assert garbage == []
    assert [e.seq for e in seen] == list(range(len(seen)))
    assert [e.type for e in seen].count("features") == 3
    assert state.features_received == 6
    assert state.status == "ok" and state.exit_code == 0
    assert state.counts["detections"] == 6 and state.done == state.total == 13
    assert state.result["outputs"]["gpkg"] == "OUT.gpkg"
    assert state.crs == "EPSG:32614"
    assert state.warnings[0]["code"] == "gsd_mismatch"
    assert state.seq_gaps == 0
    assert "detections 6" in state.summary()


def test_error_run_keeps_code_message_and_hint():
    state, _, garbage = replay("run_error.jsonl")
    assert garbage == []
    assert state.status == "failed"
    assert state.errors[0]["code"] == "band_mismatch"
    assert "--band-order" in state.errors[0]["hint"]
    message, hint = describe_exit(state, 1, "")
    assert "nir" in message and "--band-order" in hint


def test_cancelled_run_reports_cancelled_with_partial_results():
    state, _, _ = replay("run_cancelled.jsonl")
    assert state.status == "cancelled"
    assert state.features_received == 1
    assert state.result["stats"]["chips_inferred"] == 5


def test_garbage_and_truncated_lines_are_reported_not_raised():
    state, seen, garbage = replay("garbage_truncated.jsonl", chunk_size=13)
    assert [e.type for e in seen] == ["hello", "heartbeat", "features"]
    assert seen[1].known is False
    assert len(garbage) == 7
    assert any("not JSON" in g for g in garbage)
    assert any("not a JSON object" in g for g in garbage)
    assert any("valid 'seq'" in g for g in garbage)
    assert any("non-negative" in g for g in garbage)
    assert any("v99" in g for g in garbage)
    assert garbage[-1].startswith("truncated last line")
    assert state.status == ""  # no done event arrived
    # only the polygon feature is usable; the null-geometry one is skipped
    assert len(valid_features(seen[2])) == 1


def test_overlong_unterminated_line_is_dropped(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_LINE_BYTES", 100)
    garbage = []
    stream = EventStream(on_garbage=garbage.append)
    assert stream.feed(b"x" * 200) == []
    assert garbage and "exceeds" in garbage[0]


@pytest.mark.parametrize("state_status, exit_code, crashed, expected", [
    ("ok", 0, False, "ok"),
    ("cancelled", 0, False, "cancelled"),
    ("", 3, False, "partial"),
    ("", 1, False, "failed"),
    ("", None, True, "failed"),
    ("", 0, False, "failed"),  # clean exit without result or done: a cut stream is not a success
])
def test_final_status(state_status, exit_code, crashed, expected):
    stream = EventStream()
    stream.state.status = state_status
    assert final_status(stream.state, exit_code, crashed) == expected


def test_describe_exit_uses_the_last_stderr_line_when_there_is_no_error_event():
    stream = EventStream()
    message, hint = describe_exit(stream.state, 134, "Traceback\nRuntimeError: boom\n")
    assert "134" in message and "RuntimeError: boom" in message
    assert "log panel" in hint


def test_overall_percent_moves_through_the_stages():
    values = [overall_percent("plan", 1, 1), overall_percent("screen", 16, 16), overall_percent("infer", 0, 13),
              overall_percent("infer", 5, 13), overall_percent("infer", 13, 13), overall_percent("write", 1, 1)]
    assert values == sorted(values) and values[0] > 0 and values[-1] < 100
    assert 30 < overall_percent("infer", 5, 13) < 50
    assert overall_percent("infer", 20, 13) == overall_percent("infer", 13, 13)  # clamped
    assert overall_percent("aggregate", 1, 1) == 100
    assert overall_percent("infer", 3, 0) == overall_percent("infer", 0, 1)


REAL = sorted(RECORDED.glob("real_*.jsonl"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_recordings_from_the_real_engine_parse_cleanly(path):
    state, seen, garbage = replay(path.name, chunk_size=97)
    assert garbage == []
    assert [e.seq for e in seen] == list(range(len(seen))) and state.seq_gaps == 0
    assert seen[0].type == "hello" and seen[-1].type == "done"
    assert state.result is not None
    expected = {"real_plan.jsonl": "ok", "real_run_ok.jsonl": "ok", "real_run_cancelled.jsonl": "cancelled"}
    assert state.status == expected[path.name]
    if path.name != "real_plan.jsonl":
        assert state.features_received == state.result["stats"]["detections"]
        assert state.result["stats"]["chips_planned"] == state.counts["planned"]
    if path.name == "real_run_cancelled.jsonl":
        assert state.result["stats"]["chips_inferred"] < state.result["stats"]["chips_planned"]


def test_real_recordings_are_present():
    assert {p.name for p in REAL} == {"real_plan.jsonl", "real_run_ok.jsonl", "real_run_cancelled.jsonl"}


def test_usd_keeps_small_costs_visible():
    from plugin.summary import usd

    assert usd(0.000258) == "$0.00026"
    assert usd(1.5) == "$1.50" and usd(0) == "$0.00" and usd(None) == "n/a"
