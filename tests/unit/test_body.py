"""Outbound bodies: flat field -> expression maps, nested blocks, and lists built with $each."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from adapters.http.config import HttpOutboundConfig
from bus.errors import ExpressionError
from bus.event import Event
from bus.expr.body import Body

ORDER = {
    "order_id": "1001",
    "customer_id": "c-7",
    "currency": "usd",
    "total": 2750,
    "lines": [{"sku": "MUG", "quantity": 2, "unit_price": 1000}, {"sku": "TEE", "quantity": 1, "unit_price": 750}],
}


def order(**changes: object) -> Event:
    return Event(schema="Order", data={**ORDER, **changes}, source="/test", id="evt-1")


def test_flat_body_and_no_body() -> None:
    assert Body({"id": "order_id", "event": "$id"}).render(order()) == {"id": "1001", "event": "evt-1"}
    # YAML scalars are constants: `count: 1`, `active: true`, `note: null`
    assert Body({"count": 1, "ratio": 0.5, "active": True, "note": None}).render(order()) == {
        "count": 1,
        "ratio": 0.5,
        "active": True,
        "note": None,
    }
    assert Body(None).render(order()) == ORDER


def test_nested_blocks_and_lists_render_the_target_shape() -> None:
    body = Body(
        {
            "CustomerRef": {"value": "customer_id"},
            "Line": {
                "$each": "lines",
                "$as": "line",
                "Amount": "float(major_units(line.quantity * line.unit_price, currency))",
                "SalesItemLineDetail": {"ItemRef": {"value": "line.sku"}, "Qty": "line.quantity"},
                "Order": "order_id",  # the event's fields stay visible beside the element
            },
            "PrivateNote": '"Shopify order " + order_id',
        }
    )
    assert body.render(order()) == {
        "CustomerRef": {"value": "c-7"},
        "Line": [
            {"Amount": 20.0, "SalesItemLineDetail": {"ItemRef": {"value": "MUG"}, "Qty": 2}, "Order": "1001"},
            {"Amount": 7.5, "SalesItemLineDetail": {"ItemRef": {"value": "TEE"}, "Qty": 1}, "Order": "1001"},
        ],
        "PrivateNote": "Shopify order 1001",
    }
    # No list: no elements; not a list: an evaluation error naming the field (dead-lettered).
    assert body.render(order(lines=None))["Line"] == []
    with pytest.raises(ExpressionError, match=r"Line.\$each: expected a list, got str"):
        body.render(order(lines="MUG"))


def test_default_element_name_is_item_and_value_gives_a_list_of_values() -> None:
    assert Body({"skus": {"$each": "lines", "sku": "item.sku"}}).render(order()) == {"skus": [{"sku": "MUG"}, {"sku": "TEE"}]}
    assert Body({"skus": {"$each": "lines", "$value": "lower(item.sku)"}}).render(order()) == {"skus": ["mug", "tee"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Line": {"$each": "lines", "Amount": "line.quantity *"}}, "Line.Amount: unexpected end of expression"),
        ({"Line": {"$each": "lines +", "Amount": "1"}}, r"Line.\$each"),
        ({"Qty": [3]}, r"Qty: expected an expression .text. or a block, got list \[3\]"),
        ({"skus": {"$value": "item.sku"}}, r"skus: \$value belongs in a block with \$each"),
        ({"ref": {"$as": "x", "value": "x"}}, r"ref: \$as belongs in a block with \$each"),
    ],
)
def test_config_errors_name_the_nested_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpOutboundConfig.model_validate({"name": "qb", "type": "http", "url": "http://x/", "body": body})


def test_emit_map_builds_lists_of_records_from_the_source_document() -> None:
    from bus.adapter_api import EmitSpec
    from bus.mapping import Emitter

    spec = EmitSpec.model_validate(
        {
            "schema": "Order",
            "id": '"shopify-order-" + str(id)',
            "map": {
                "order_id": "str(id)",
                "currency": "currency",
                "total": "minor_units(total_price, currency)",
                "lines": {
                    "$each": "line_items",
                    "$as": "li",
                    "sku": "li.sku",
                    "quantity": "li.quantity",
                    "unit_price": "minor_units(li.price, currency)",
                },
            },
        }
    )
    shopify = {"id": 450789469, "currency": "USD", "total_price": "21.98", "line_items": [{"sku": "MUG", "quantity": 2, "price": "10.99"}]}
    event = Emitter(spec, source="/inbound/shopify").build(shopify)
    assert event.id == "shopify-order-450789469"
    assert event.data == {
        "order_id": "450789469",
        "currency": "USD",
        "total": 2198,
        "lines": [{"sku": "MUG", "quantity": 2, "unit_price": 1099}],
    }


@pytest.mark.parametrize("sent", ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331\r\nX-Evil: 1-01", "not a trace", "00-XYZ-1-01", ""])
def test_a_traceparent_that_does_not_parse_starts_a_new_trace(sent: str) -> None:
    from bus.adapter_api import EmitSpec
    from bus.mapping import Emitter

    spec = EmitSpec.model_validate({"schema": "Payment", "map": {"payment_id": "id", "amount": "1", "currency": '"eur"'}})
    event = Emitter(spec, source="/inbound/x").build({"id": "p1"}, traceparent=sent)
    assert event.traceparent != sent and len(event.traceparent) == 55 and "\n" not in event.traceparent
    kept = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert Emitter(spec, source="/inbound/x").build({"id": "p1"}, traceparent=kept).traceparent == kept


@pytest.mark.parametrize(
    ("sent", "says"),
    [({"a": 1}, "emit.id gave an object"), ([1, 2], "emit.id gave a list"), ("e1", None), (42, None)],
)
def test_an_id_or_key_that_is_not_one_value_is_refused(sent: object, says: str | None) -> None:
    """A sender's id that is an object would become Python's text of it ("{'a': 1}") as the
    event's id, and the same for a key: refused at the edge instead, saying which."""
    from bus.config.adapters import EmitSpec
    from bus.errors import EventRejected
    from bus.mapping import Emitter

    spec = EmitSpec.model_validate(
        {"schema": "Payment", "id": "id", "key": "ref", "map": {"payment_id": "ref", "amount": "1", "currency": '"eur"'}}
    )
    emitter = Emitter(spec, source="/inbound/x")
    if says is None:
        assert emitter.build({"id": sent, "ref": "p1"}).id == str(sent)
        return
    with pytest.raises(EventRejected, match=says):
        emitter.build({"id": sent, "ref": "p1"})
    with pytest.raises(EventRejected, match=says.replace("id", "key")):
        emitter.build({"id": "e1", "ref": sent})


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        ("evt_1\r\nX-Evil: 1", "holds U+000D at position 5"),  # would end the header line it travels in
        ("evt_1\x00", "holds U+0000"),
        ("evt\x85", "holds U+0085"),  # a C1 control (NEL)
        ("evt_\ud800", "holds U+D800"),  # a lone surrogate, from JSON's "\ud800": not text
        ("evt_\ufffe", "holds U+FFFE"),  # a noncharacter
        ("e" * 4097, "4,097 characters long; at most 4,096"),
        ("", "emit.id gave an empty value"),  # every empty id would be the same event to the ledger
        ("évt_2_🙂", None),  # any other text is an id (percent-encoded where it travels as ce-id)
        ("   ", None),
        ("evt\u200b1", None),  # not printable (a format character), but nothing CloudEvents forbids
        ("e" * 4096, None),
    ],
)
def test_an_id_or_subject_that_cannot_travel_as_a_header_is_refused_at_the_edge(sent: str, says: str | None) -> None:
    """CloudEvents allows an id and subject no control characters, surrogates or noncharacters: a
    CR/LF in one used to be accepted (202) and then dead-lettered by every HTTP target whose
    headers carry it; an empty id made every such event the same one."""
    from bus.config.adapters import EmitSpec
    from bus.errors import EventRejected
    from bus.mapping import Emitter

    spec = EmitSpec.model_validate(
        {"schema": "Payment", "id": "id", "subject": "sub", "map": {"payment_id": "ref", "amount": "1", "currency": '"eur"'}}
    )
    emitter = Emitter(spec, source="/inbound/x")
    if says is None:
        event = emitter.build({"id": sent, "sub": sent or "s", "ref": "p1"})
        assert event.id == sent
        return
    with pytest.raises(EventRejected, match=re.escape(says)):
        emitter.build({"id": sent, "sub": "s", "ref": "p1"})
    if sent:  # the subject, the same way (an empty subject is no subject)
        with pytest.raises(EventRejected, match="the event's subject"):
            emitter.build({"id": "e1", "sub": sent, "ref": "p1"})
    assert emitter.build({"id": "e1", "sub": "", "ref": "p1"}).subject is None
    # A sender's CloudEvents id is held to the same rules.
    no_id = Emitter(
        EmitSpec.model_validate({"schema": "Payment", "map": {"payment_id": "ref", "amount": "1", "currency": '"eur"'}}), source="/x"
    )
    if sent:
        with pytest.raises(EventRejected, match="the event's id"):
            no_id.build({"ref": "p1"}, cloudevent={"id": sent})


def test_a_key_with_a_lone_surrogate_is_refused_and_other_keys_pass() -> None:
    from bus.config.adapters import EmitSpec
    from bus.errors import EventRejected
    from bus.mapping import Emitter

    spec = EmitSpec.model_validate({"schema": "Payment", "key": "ref", "map": {"payment_id": '"p"', "amount": "1", "currency": '"eur"'}})
    emitter = Emitter(spec, source="/inbound/x")
    with pytest.raises(EventRejected, match="key 'a\\\\ud800' holds a lone surrogate"):
        emitter.build({"ref": "a\ud800"})
    assert emitter.build({"ref": "line\nbreak"}).key == "line\nbreak"  # a Kafka key is bytes: any text will do
