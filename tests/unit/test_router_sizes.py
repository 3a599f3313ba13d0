"""A route whose transform makes an event larger than Kafka takes is dead-lettered with the reason:
produced, it would be refused by Kafka on every try, and the router would try that batch again
for ever, holding up every event behind it on the partition."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bus.kafka.clients import MAX_EVENT_BYTES
from tests.support.hub import load

if TYPE_CHECKING:
    from bus.app.route_tests import RouteTester

CONFIG = """\
kafka: {bootstrap: embedded}
routes:
  - name: doubled
    from: Payment
    transform:
      schema: Payment
      map: {payment_id: payment_id, amount: amount, currency: currency, customer_id: customer_id, status: status + status}
    to: [books]
  - name: plain
    from: Payment
    to: [wms]
outbound:
  - {name: books, type: http, url: "http://books/"}
  - {name: wms, type: http, url: "http://wms/"}
"""


def test_a_transform_output_too_large_for_kafka_is_a_dead_letter_and_other_routes_go_on(tmp_path: Path) -> None:
    from bus.app.route_tests import RouteTester

    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    loaded, _, catalog = load(path)
    tester = RouteTester(loaded, catalog)
    codec, dispatcher = tester.codec, tester.dispatcher

    def plan(customer: str) -> dict[str, list[bytes | None]]:
        value = codec.encode("Payment", {"payment_id": "p1", "amount": 1, "currency": "eur", "status": customer})
        sends = dispatcher.plan(b"p1", value, [("ce_id", b"e1")], "test/0/0")
        by: dict[str, list[bytes | None]] = {}
        for send in sends:
            name = tester.subscriber_of(send.topic) or ("dead letter" if send.topic == tester.topics.router_dead_letter else send.topic)
            by.setdefault(name, []).append(send.value)
            if name == "dead letter":
                by.setdefault("why", []).append(dict(send.headers)["bus_error"])
        return by

    half = "x" * (MAX_EVENT_BYTES // 2 + 10)  # fits once; twice over, it does not
    sent = plan(half)
    assert set(sent) == {"wms", "dead letter", "why"}
    why = (sent["why"][0] or b"").decode()
    assert why.startswith("the transform made an event of") and f"at most {MAX_EVENT_BYTES:,}" in why
    assert len(sent["wms"][0] or b"") < MAX_EVENT_BYTES  # the untransformed copy still goes

    small = plan("c-1")
    assert set(small) == {"books", "wms"}  # the same route, an ordinary event: delivered


def test_a_record_too_large_to_route_is_one_dead_letter_each_oversized_part_cut_and_marked(tmp_path: Path) -> None:
    """A producer outside the hub can write what the hub's own producers refuse: a record's
    value, key or headers too large. Routed (or dead-lettered whole), a copy could be refused by
    Kafka on every try; the router keeps what Kafka takes, marked so that it is never replayed."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from bus.app.route_tests import RouteTester
    from bus.deadletters import KEPT_OF_TOO_LARGE

    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    loaded, _, catalog = load(path)
    tester = RouteTester(loaded, catalog)
    value = tester.codec.encode("Payment", {"payment_id": "p1", "amount": 1, "currency": "eur", "status": "ok"})
    key, headers = b"k" * (KEPT_OF_TOO_LARGE + 1), [("ce_id", b"e1"), ("blob", b"b" * MAX_EVENT_BYTES)]

    # Headers are measured only once Kafka refused a copy as too large (the exact measure of every
    # event cost 1.3 % of plan()): a router engine then sets exact_sizes and routes the batch again.
    tester.dispatcher.exact_sizes = True
    (letter,) = tester.dispatcher.plan(key, value, headers, "test/0/7")
    assert letter.topic == tester.topics.router_dead_letter and tester.dispatcher.last_input is None
    marks = dict(letter.headers)
    assert letter.key == key[:KEPT_OF_TOO_LARGE] and marks["bus_key_truncated_from_bytes"] == str(len(key)).encode()
    assert marks["bus_headers_dropped"] == b"2" and "blob" not in marks and "ce_id" not in marks
    assert letter.value == value and "bus_truncated_from_bytes" not in marks  # the value was not what was too large
    assert marks["bus_origin"] == b"test/0/7" and marks["bus_error_class"] == b"EventTooLarge"
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(letter.key, letter.value, letter.headers) < MAX_EVENT_BYTES

    # Just under the limit as Kafka holds it, the same event is routed as any other.
    fits = [("ce_id", b"e1"), ("blob", b"b" * (MAX_EVENT_BYTES - 1024))]
    routed = tester.dispatcher.plan(b"p1", value, fits, "test/0/8")
    assert {tester.subscriber_of(send.topic) for send in routed} == {"books", "wms"}


def test_large_headers_are_measured_once_kafka_refused_a_copy(tmp_path: Path) -> None:
    from bus.app.route_tests import RouteTester

    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    loaded, _, catalog = load(path)
    tester = RouteTester(loaded, catalog)
    value = tester.codec.encode("Payment", {"payment_id": "p1", "amount": 1, "currency": "eur", "status": "ok"})
    headers = [("ce_id", b"e1"), ("blob", b"b" * MAX_EVENT_BYTES)]
    assert {tester.subscriber_of(s.topic) for s in tester.dispatcher.plan(b"p1", value, headers, "t/0/1")} == {"books", "wms"}
    tester.dispatcher.exact_sizes = True
    assert [s.topic for s in tester.dispatcher.plan(b"p1", value, headers, "t/0/1")] == [tester.topics.router_dead_letter]


def aggregating(tmp_path: Path, route: str, aggregate: str) -> RouteTester:
    """A route tester for a hub with one aggregate route (``route``, to books) and a plain one (to wms)."""
    from bus.app.route_tests import RouteTester

    path = tmp_path / "bus.yaml"
    path.write_text(
        "kafka: {bootstrap: embedded}\n"
        "routes:\n"
        f"  - name: {route}\n"
        "    from: Payment\n"
        f"    aggregate: {aggregate}\n"
        "    transform: {schema: UsageMetric, map: {account_id: key, metric: '\"payments\"', value: float(n), count: count}}\n"
        "    to: [books]\n"
        "  - {name: plain, from: Payment, to: [wms]}\n"
        "outbound:\n"
        "  - {name: books, type: http, url: 'http://books/'}\n"
        "  - {name: wms, type: http, url: 'http://wms/'}\n"
    )
    loaded, _, catalog = load(path)
    return RouteTester(loaded, catalog)


def test_a_record_whose_key_is_not_text_is_an_aggregate_routes_dead_letter(tmp_path: Path) -> None:
    """An aggregate groups events by their key as text. A record a producer outside the hub wrote
    with a key that is not UTF-8 raised out of ``plan()``: the router stopped on it at every start."""
    tester = aggregating(tmp_path, "per-key", "{count: 2, fields: {n: count()}}")
    value = tester.codec.encode("Payment", {"payment_id": "p1", "amount": 1, "currency": "eur", "status": "ok"})
    sends = tester.dispatcher.plan(b"\xff\xfe", value, [("ce_id", b"e1")], "t/0/1", offset=1)
    letters = [s for s in sends if s.topic == tester.topics.router_dead_letter]
    assert len(letters) == 1 and b"not UTF-8 text" in dict(letters[0].headers)["bus_error"]
    assert tester.subscriber_of(next(s.topic for s in sends if s not in letters)) == "wms"  # the other route goes on
    assert tester.dispatcher.aggregators["per-key"].state == {}  # nothing folded in
    tester.dispatcher.plan(b"k1", value, [("ce_id", b"e2")], "t/0/2", offset=2)
    assert set(tester.dispatcher.aggregators["per-key"].state) == {"k1"}


def test_an_aggregate_at_its_max_keys_dead_letters_new_keys_only_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Count windows and ``previous`` keep every key seen: a flood of new keys (an id where a
    customer was meant, or a hostile sender) grew the router until it was killed, and the state
    it read back at the next start killed it again."""
    from prometheus_client import REGISTRY

    tester = aggregating(tmp_path, "capped", "{count: 5, previous: true, max_keys: 3, fields: {n: count()}}")
    value = tester.codec.encode("Payment", {"payment_id": "p1", "amount": 1, "currency": "eur", "status": "ok"})

    def letters(key: bytes, offset: int) -> list[bytes]:
        sends = tester.dispatcher.plan(key, value, [("ce_id", f"e{offset}".encode())], f"t/0/{offset}", offset=offset)
        assert any(tester.subscriber_of(s.topic) == "wms" for s in sends)  # the other route goes on whatever happens here
        return [dict(s.headers)["bus_error"] for s in sends if s.topic == tester.topics.router_dead_letter]

    aggregator = tester.dispatcher.aggregators["capped"]
    with caplog.at_level(logging.WARNING, logger="routing.aggregate"):
        assert [letters(f"k{i}".encode(), i) for i in range(3)] == [[], [], []]
        [error] = letters(b"k3", 3)  # a fourth key
        assert b"holds its max_keys (3) keys" in error and b"raise aggregate.max_keys" in error
        assert letters(b"k4", 4) != [] and letters(b"k0", 5) == []  # keys it holds still aggregate
    assert set(aggregator.state) == {"k0", "k1", "k2"} and aggregator.state["k0"].count == 2
    said = [r.getMessage() for r in caplog.records if r.name == "routing.aggregate"]
    assert len(said) == 1 and "aggregate capped holds its max_keys (3) keys" in said[0]  # once, not per event
    assert REGISTRY.get_sample_value("bus_aggregate_keys", {"route": "capped"}) == 3
    assert REGISTRY.get_sample_value("bus_routed_events_total", {"route": "capped", "outcome": "failed"}) == 2

    aggregator.drop_partitions({0})  # a rebalance takes its keys: room again, said
    assert REGISTRY.get_sample_value("bus_aggregate_keys", {"route": "capped"}) == 0
    assert "events of new keys are aggregated again" in [r for r in caplog.records if r.name == "routing.aggregate"][-1].getMessage()
    assert letters(b"k9", 6) == []
