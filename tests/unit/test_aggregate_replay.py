"""A router dead letter of an aggregate's result, replayed to its route's canonical topic: the
router shapes it again with the route as it is now, or dead-letters it again saying why not."""

from __future__ import annotations

import json
from pathlib import Path

from bus.deadletters import AGGREGATE_HEADER
from tests.support.hub import load

CONFIG = """\
kafka: {bootstrap: embedded}
routes:
  - name: totals
    from: Payment
    aggregate: {count: 2, fields: {n: count(), sum: sum(amount)}, emit_when: "n > 0"}
    transform:
      schema: UsageMetric
      map: {account_id: key, metric: '"total"', value: "float(100 / sum)", count: n, window_start: window_start, window_end: window_end}
    to: [books]
outbound:
  - {name: books, type: http, url: "http://books/"}
"""


def test_a_replayed_result_is_shaped_again_or_refused_with_its_reason(tmp_path: Path) -> None:
    from bus.app.route_tests import RouteTester

    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    loaded, _, catalog = load(path)
    tester = RouteTester(loaded, catalog)
    dispatcher, topics = tester.dispatcher, tester.topics

    def replay(
        record: object, headers: list[tuple[str, bytes]], key: bytes | None = b"acct"
    ) -> list[tuple[str, dict[str, str], bytes | None]]:
        sends = dispatcher.plan(key, json.dumps(record).encode(), headers, "bus.canonical.Payment/0/7")
        return [(tester.subscriber_of(s.topic) or s.topic, {k: v.decode() for k, v in s.headers}, s.value) for s in sends]

    result = {"key": "acct", "window_start": None, "window_end": None, "n": 2, "sum": 4}
    ours = [("ce_id", b"totals:acct:3"), (AGGREGATE_HEADER, b"totals"), ("bus_replayed_from", b"0/5")]

    [(to, headers, value)] = replay(result, ours)
    assert to == "books" and headers["ce_id"] == "totals:acct:3" and headers["ce_type"] == "UsageMetric"
    assert tester.codec.decode(value or b"")[1]["value"] == 25.0

    # The transform still cannot shape it: a dead letter again, replayable again to the same topic.
    [(to, headers, _)] = replay({**result, "sum": 0}, ours)
    assert (to, headers["bus_origin"], headers[AGGREGATE_HEADER]) == (topics.router_dead_letter, "bus.canonical.Payment", "totals")
    assert "division by zero" in headers["bus_error"], headers

    # emit_when, as it is now, leaves it out: nothing sent, counted as dropped.
    route = dispatcher.router.routes[0]
    dropped = route.stats.dropped
    assert replay({**result, "n": 0}, ours) == [] and route.stats.dropped == dropped + 1

    # A route no longer there, a record that is not one, no id or no key: dead letters that say so.
    for record, headers_, key, why in [
        (result, [("ce_id", b"x:acct:1"), (AGGREGATE_HEADER, b"gone")], b"acct", "no longer has as an aggregate route"),
        ([1, 2], ours, b"acct", "without its record"),
        (result, [(AGGREGATE_HEADER, b"totals")], b"acct", "without its record"),
        (result, ours, None, "without its record"),
        (result, ours, b"\xff", "without its record"),
    ]:
        [(to, said, _)] = replay(record, headers_, key)
        assert to == topics.router_dead_letter and why in said["bus_error"], said

    # A value nested past Python's stack (written to the topic by hand): the same, not a RecursionError out of the router.
    [deep] = dispatcher.plan(b"acct", b"[" * 100_000, ours, "bus.canonical.Payment/0/8")
    assert deep.topic == topics.router_dead_letter and b"without its record" in dict(deep.headers)["bus_error"]

    # Anything else that is not Avro stays the router's plain dead letter.
    [(to, said, _)] = replay(result, [("ce_id", b"e1")])
    assert to == topics.router_dead_letter and AGGREGATE_HEADER not in said and "totals" not in said.get("bus_route", "")
