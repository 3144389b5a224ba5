"""Cost figures and the remembered throughput."""

from __future__ import annotations

import pytest

from groundbreak.cost import DEFAULT_PRICE_PER_HOUR, cost_of, remember_throughput, remembered_throughput


def test_cost_follows_seconds_and_price():
    c = cost_of(1800.0, price_per_hour=0.2, km2=50.0, chips=2000)
    assert c.run_usd == pytest.approx(0.1)
    assert c.per_km2_usd == pytest.approx(0.002)
    assert c.per_1000_chips_usd == pytest.approx(0.05)
    assert c.to_dict()["price_per_hour"] == 0.2
    empty = cost_of(10.0, price_per_hour=DEFAULT_PRICE_PER_HOUR, km2=0.0, chips=0)
    assert empty.per_km2_usd is None and empty.per_1000_chips_usd is None
    assert DEFAULT_PRICE_PER_HOUR > 0


def test_throughput_is_remembered_per_model_and_threads(tmp_path, monkeypatch):
    # conftest points XDG_CACHE_HOME at this test's folder.
    assert remembered_throughput("abc", 2) is None
    remember_throughput("abc", 2, 123.456)
    assert remembered_throughput("abc", 2) == pytest.approx(123.46)
    assert remembered_throughput("abc", 1) is None
    remember_throughput("def", 2, 5.0)
    assert remembered_throughput("abc", 2) == pytest.approx(123.46)


def test_an_unwritable_cache_does_not_fail(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GROUNDBREAK_CACHE", str(tmp_path / "file" / "groundbreak"))
    remember_throughput("abc", 2, 1.0)  # no exception
    assert remembered_throughput("abc", 2) is None
