"""A record the router cannot read is that record's dead letter, and the router goes on: raised out
of plan(), the batch failed, the router restarted, read the same record again, and stopped there
at every start, holding up every event behind it on the partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from tests.support.hub import load

CONFIG = """\
kafka: {bootstrap: embedded}
routes:
  - {name: refunds, from: Refund, to: [books]}
outbound:
  - {name: books, type: http, url: "http://books/"}
"""


def test_a_time_past_the_year_9999_in_utc_written_by_another_producer_is_a_dead_letter(tmp_path: Path) -> None:
    from bus.app.route_tests import RouteTester

    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    loaded, _, catalog = load(path)
    tester = RouteTester(loaded, catalog)
    refund = {"refund_id": "re_1", "payment_id": "pi_1", "amount": 100, "currency": "usd", "reason": None, "status": "succeeded"}
    # Avro writes it (the offset keeps it in Python's calendar); read back, it is the year 10000.
    late = tester.codec.encode("Refund", {**refund, "created_at": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))})
    [letter] = tester.dispatcher.plan(b"re_1", late, [("ce_id", b"e1")], "canonical.Refund/0/7")
    assert letter.topic == tester.topics.router_dead_letter
    assert "undecodable Avro body for schema Refund" in dict(letter.headers)["bus_error"].decode()
    fine = tester.codec.encode("Refund", {**refund, "created_at": datetime(2026, 12, 1, tzinfo=UTC)})
    [copy] = tester.dispatcher.plan(b"re_2", fine, [("ce_id", b"e2")], "canonical.Refund/0/8")
    assert tester.subscriber_of(copy.topic) == "books"  # the next one goes on
