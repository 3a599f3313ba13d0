"""A route whose transform makes an event larger than Kafka takes is dead-lettered with the reason:
produced, it would be refused by Kafka on every try, and the router would try that batch again
for ever, holding up every event behind it on the partition."""

from __future__ import annotations

from pathlib import Path

from bus.kafka.clients import MAX_EVENT_BYTES
from tests.support.hub import load

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
