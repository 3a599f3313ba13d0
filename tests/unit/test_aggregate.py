from __future__ import annotations

from bus.config.routes import AggregateConfig
from routing.aggregate import Aggregator

FIELDS = {
    "n": "count()",
    "total": "sum(amount)",
    "low": "min(amount)",
    "high": "max(amount)",
    "mean": "avg(amount)",
    "first_sku": "first(sku)",
    "last_sku": "last(sku)",
}


def agg(**config: object) -> Aggregator:
    return Aggregator("r", AggregateConfig.model_validate({"fields": FIELDS, **config}))


def test_count_window_emits_every_n_events_with_every_function() -> None:
    a = agg(count=3)
    results = [
        a.add("k", partition=0, offset=i, folds=[({"amount": amt, "sku": f"s{i}"}, {})], now=0) for i, amt in enumerate([5, 1, 9, 4])
    ]
    assert [len(r[0]) for r in results if r] == [0, 0, 1, 0]
    [emission] = results[2][0]  # type: ignore[index]
    assert emission.id == "r:k:0"
    assert emission.record == {
        "key": "k",
        "count": 3,
        "window_start": None,
        "window_end": None,
        "n": 3,
        "total": 15,
        "low": 1,
        "high": 9,
        "mean": 5.0,
        "first_sku": "s0",
        "last_sku": "s2",
    }
    more = [a.add("k", partition=0, offset=i, folds=[({"amount": 1, "sku": "x"}, {})], now=0) for i in (4, 5)]
    assert more[-1] is not None and more[-1][0][0].id == "r:k:1"  # the next window has its own id
    assert more[-1][0][0].record["total"] == 4 + 1 + 1


def test_redelivered_events_are_not_counted_twice() -> None:
    a = agg(count=10)
    assert a.add("k", partition=0, offset=7, folds=[({"amount": 2}, {})], now=0) is not None
    assert a.add("k", partition=0, offset=7, folds=[({"amount": 2}, {})], now=0) is None
    assert a.add("k", partition=0, offset=3, folds=[({"amount": 2}, {})], now=0) is None
    assert a.state["k"].count == 1


def test_state_survives_through_the_changelog_value() -> None:
    a = agg(count=3)
    a.add("k", partition=2, offset=0, folds=[({"amount": 5, "sku": "a"}, {})], now=0)
    folded = a.add("k", partition=2, offset=1, folds=[({"amount": 7, "sku": "b"}, {})], now=0)
    assert folded is not None
    restarted = agg(count=3)
    restarted.load("k", folded[1], partition=2)
    assert restarted.add("k", partition=2, offset=1, folds=[({"amount": 7, "sku": "b"}, {})], now=0) is None  # replay skipped
    emitted = restarted.add("k", partition=2, offset=2, folds=[({"amount": 1, "sku": "c"}, {})], now=0)
    assert emitted is not None
    assert emitted[0][0].record["total"] == 13 and emitted[0][0].record["mean"] == 13 / 3
    restarted.load("k", None, partition=2)  # a tombstone forgets the key
    assert "k" not in restarted.state


def test_time_windows_close_on_tick_and_on_a_later_event() -> None:
    a = agg(window="1m")
    a.add("k", partition=0, offset=0, folds=[({"amount": 1}, {})], now=125)
    a.add("j", partition=1, offset=0, folds=[({"amount": 2}, {})], now=130)
    assert a.tick(now=179) == []
    closed = a.tick(now=180)
    assert sorted(e.id for e, _ in closed) == ["r:j:1970-01-01T00:02:00.000Z", "r:k:1970-01-01T00:02:00.000Z"]
    assert closed[0][0].record["window_end"] == "1970-01-01T00:03:00.000Z"
    assert a.tick(now=500) == []  # nothing open any more
    a.add("k", partition=0, offset=1, folds=[({"amount": 3}, {})], now=200)
    later = a.add("k", partition=0, offset=2, folds=[({"amount": 4}, {})], now=245)  # next window: the open one closes first
    assert later is not None and [e.record["total"] for e in later[0]] == [3]


def test_revoked_partitions_are_forgotten() -> None:
    a = agg(count=5)
    a.add("k", partition=0, offset=0, folds=[({"amount": 1}, {})], now=0)
    a.add("j", partition=1, offset=0, folds=[({"amount": 1}, {})], now=0)
    a.drop_partitions({1})
    assert set(a.state) == {"k"}


def test_aggregate_config_errors() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give exactly one of window or count"):
        AggregateConfig.model_validate({"fields": {}})
    with pytest.raises(ValidationError, match="is not one of count"):
        AggregateConfig.model_validate({"count": 2, "fields": {"x": "median(amount)"}})


def test_previous_empty_windows_and_emit_when_report_a_drop_once() -> None:
    a = Aggregator(
        "drops",
        AggregateConfig.model_validate(
            {
                "window": "10s",
                "fields": {"usage": "sum(n)"},
                "previous": True,
                "empty_windows": True,
                "emit_when": "previous.usage > 0 and usage < previous.usage * 0.5",
            }
        ),
    )
    offset = iter(range(1000))

    def feed(key: str, total: int, at: float) -> list:
        out = []
        for _ in range(total):
            folded = a.add(key, partition=0, offset=next(offset), folds=[({"n": 1}, {})], now=at)
            assert folded is not None
            out.extend(folded[0])
        return out

    feed("steady", 20, 100)
    feed("halved", 20, 100)
    feed("silent", 20, 100)
    closed = {e.key: e for e, _ in a.tick(110)}  # window [100, 110) ends: first results, no previous
    assert {k: (e.record["usage"], e.record["previous"]) for k, e in closed.items()} == {
        "steady": (20, None),
        "halved": (20, None),
        "silent": (20, None),
    }
    assert not any(a.wanted(e) for e in closed.values())
    feed("steady", 18, 112)
    feed("halved", 6, 113)
    closed = {e.key: e for e, _ in a.tick(120)}  # "silent" sent nothing: its armed window closes with 0
    assert {k: e.record["usage"] for k, e in closed.items()} == {"steady": 18, "halved": 6, "silent": 0}
    assert closed["silent"].record["count"] == 0 and closed["silent"].record["previous"]["usage"] == 20
    assert sorted(k for k, e in closed.items() if a.wanted(e)) == ["halved", "silent"]
    feed("steady", 18, 121)
    feed("halved", 6, 122)
    closed = {e.key: e for e, _ in a.tick(130)}  # steady again: no drop; silent stays silent: no second result
    assert sorted(closed) == ["halved", "steady"] and not any(a.wanted(e) for e in closed.values())
    later = a.tick(500)  # both go silent after [120, 130): one empty result each, a drop each, then nothing
    assert sorted((e.key, e.record["usage"], a.wanted(e)) for e, _ in later) == [("halved", 0, True), ("steady", 0, True)]
    assert a.tick(1000) == []
    # previous survives a restart through the changelog value.
    state = a.state["halved"].dump()
    b = Aggregator("drops", AggregateConfig.model_validate({"window": "10s", "fields": {"usage": "sum(n)"}, "previous": True}))
    b.load("halved", state, partition=0)
    assert b.state["halved"].previous == {
        "count": 0,
        "window_start": "1970-01-01T00:02:10.000Z",
        "window_end": "1970-01-01T00:02:20.000Z",
        "usage": 0,
    }


def test_empty_windows_need_a_time_window() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="empty_windows needs a time window"):
        AggregateConfig.model_validate({"count": 5, "fields": {}, "empty_windows": True})
    with pytest.raises(ValidationError, match="emit_when"):
        AggregateConfig.model_validate({"window": "1m", "fields": {}, "emit_when": "usage <"})


def test_the_elements_of_a_split_event_are_folded_as_one_step() -> None:
    """A split route can feed an aggregate: an event's elements go in together, under the event's
    offset, so a replay of the event neither repeats nor loses any of them; a count window may
    close in the middle of an event's elements."""
    a = agg(count=2)
    lines = [({"amount": q, "sku": s}, {"index": i}) for i, (q, s) in enumerate([(2, "A"), (1, "B"), (5, "C")])]
    folded = a.add("o-1", partition=0, offset=10, folds=lines, now=0)
    assert folded is not None
    [emission], _ = folded
    assert emission.record["n"] == 2 and emission.record["total"] == 3 and emission.record["last_sku"] == "B"
    assert a.add("o-1", partition=0, offset=10, folds=lines, now=0) is None  # the whole event is a replay
    second, _ = a.add("o-1", partition=0, offset=11, folds=[({"amount": 4, "sku": "D"}, {})], now=0) or ([], b"")
    assert [e.record["total"] for e in second] == [9]  # C (left from the first event) and D


def test_a_split_route_feeds_its_aggregate_elements_and_the_checker_reads_them() -> None:
    from bus.config.routes import RouteConfig
    from routing.router import Router

    route = RouteConfig.model_validate(
        {
            "name": "units",
            "from": "Order",
            "split": {"items": "lines", "as": "line"},
            "aggregate": {"count": 100, "fields": {"units": "sum(line.quantity)", "positions": "max($index)"}},
            "transform": {
                "schema": "UsageMetric",
                "map": {"account_id": "key", "metric": '"units"', "value": "float(units)", "count": "count"},
            },
            "to": ["books"],
        }
    )
    order = {
        "order_id": "o-1",
        "customer_id": "c",
        "currency": "usd",
        "total": 1,
        "lines": [{"sku": "A", "quantity": 2, "unit_price": 1}] * 3,
    }
    [outcome] = Router([route]).decide("Order", order, {"id": "e1"}).outcomes
    assert outcome.status == "aggregated" and outcome.folds is not None
    assert [m["index"] for _, m in outcome.folds] == [0, 1, 2] and all(s["line"]["quantity"] == 2 for s, _ in outcome.folds)


def test_tick_closes_only_windows_that_ended_whoever_else_the_router_has_seen() -> None:
    """tick visits the keys of windows that ended, not every key ever seen: a key reloaded from
    the changelog, one that moved on to the next window, and one whose partition was revoked are
    each handled once, and later ticks have nothing to look at."""
    a = agg(window="60s")
    for i in range(1000):  # keys of the window [0, 60)
        a.add(f"old{i}", partition=i % 2, offset=i, folds=[({"amount": 1, "sku": "a"}, {})], now=10)
    a.add("moved", partition=0, offset=5000, folds=[({"amount": 1}, {})], now=10)
    a.add("moved", partition=0, offset=5001, folds=[({"amount": 2}, {})], now=70)  # its first window closed by the event
    reloaded = agg(window="60s")
    reloaded.load("old1", a.state["old1"].dump(), 1)
    a.drop_partitions({1})  # the odd keys now belong to another router

    closed = a.tick(now=61)
    assert sorted(e.key for e, _ in closed) == sorted(f"old{i}" for i in range(0, 1000, 2))  # not "moved": still in [60, 120)
    assert a.tick(now=62) == []  # nothing left to close
    assert sum(len(keys) for keys in a._starting.values()) == 1  # only "moved", in its new window
    [(emission, _)] = a.tick(now=121)
    assert (emission.key, emission.record["total"]) == ("moved", 2)
    [(again, _)] = reloaded.tick(now=61)  # a key reloaded from the changelog closes on time too
    assert (again.key, again.record["count"]) == ("old1", 1)


def test_a_closed_key_is_forgotten_once_its_last_event_is_committed_and_not_before() -> None:
    """Memory does not grow with every key ever seen: a key whose window closed, with nothing open,
    is forgotten once the router committed past its last event (a replay after a crash cannot
    bring that event back), and the changelog gets its tombstone. Before the commit, or with a
    window still open, or when its previous result is needed, it stays."""
    a = agg(window="60s")
    for i in range(100):
        a.add(f"k{i}", partition=i % 2, offset=1000 + i, folds=[({"amount": 1}, {})], now=10)
    a.add("open", partition=0, offset=2000, folds=[({"amount": 1}, {})], now=65)
    assert len(a.tick(now=61)) == 100
    assert a.forget_settled() == []  # nothing committed yet: a crash now would replay these events
    a.committed(0, 1050)  # partition 0 committed below some of its keys' last events
    gone = a.forget_settled()
    assert sorted(gone) == sorted((f"k{i}", 0) for i in range(0, 50, 2))  # offsets 1000..1048 on partition 0
    a.committed(0, 3000)
    a.committed(1, 3000)
    assert len(a.forget_settled()) == 75  # the rest of the closed ones; "open" has a window open
    assert set(a.state) == {"open"}
    a.add("k3", partition=1, offset=3001, folds=[({"amount": 5}, {})], now=70)  # it comes back: counted anew
    [(emission, _)] = [c for c in a.tick(now=121) if c[0].key == "k3"]
    assert emission.record["count"] == 1

    kept = agg(window="60s", previous=True)  # the next result needs this one: never forgotten
    kept.add("k", partition=0, offset=1, folds=[({"amount": 1}, {})], now=10)
    kept.tick(now=61)
    kept.committed(0, 100)
    assert kept.forget_settled() == [] and "k" in kept.state
    counted = agg(count=2)  # a count window's number is part of its results' ids: kept
    counted.add("k", partition=0, offset=1, folds=[({"amount": 1}, {}), ({"amount": 1}, {})], now=10)
    counted.committed(0, 100)
    assert counted.forget_settled() == [] and "k" in counted.state
