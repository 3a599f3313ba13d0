"""The CloudEvents bindings (bus/cloudevents.py), read by the ``cloudevents`` SDK: what the hub
writes on Kafka, HTTP and RabbitMQ is the event the SDK reads back, attribute by attribute; what
the SDK writes over HTTP (binary or structured) is what the hub reads."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.bindings import rabbitmq as sdk_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.cloudevents import _HEADER_SAFE, from_http, http_headers, prefixed_headers
from bus.config.adapters import EmitSpec
from bus.errors import EventRejected
from bus.event import Event
from bus.mapping import Emitter

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)  # spaces, '"', '%', any script
events = st.builds(
    lambda i, s, t, subject: Event(schema="Payment", data={"amount": 1}, source=f"/inbound/{s}", id=i, type=t, subject=subject),
    text,
    text,
    text,
    st.one_of(st.none(), text),
)


def read_by_sdk(found: Any) -> dict[str, Any]:
    return {
        "specversion": found.get_specversion(),
        "id": found.get_id(),
        "source": found.get_source(),
        "type": found.get_type(),
        "time": found.get_time(),
        "subject": found.get_subject(),
    }


def expected(event: Event) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": datetime.fromisoformat(event.time),
        "subject": event.subject,
    }


@settings(max_examples=100)
@given(events)
def test_the_canonical_kafka_headers_are_the_kafka_binding(event: Event) -> None:
    message = sdk_kafka.KafkaMessage(headers=dict(event.headers()), key=b"k", value=b"{}")
    found = sdk_kafka.from_binary(message, JSONFormat(), CloudEvent)
    assert read_by_sdk(found) == expected(event)


@settings(max_examples=100)
@given(events)
def test_outgoing_http_headers_are_the_http_binding(event: Event) -> None:
    headers = {**http_headers(event), "content-type": "application/json"}
    found = sdk_http.from_binary(sdk_http.HTTPMessage(headers, b'{"amount": 1}'), JSONFormat(), CloudEvent)
    assert read_by_sdk(found) == expected(event)
    assert headers["traceparent"] == event.traceparent  # the tracing extension rides the W3C header


def test_an_http_header_value_is_percent_encoded_exactly_where_the_binding_says() -> None:
    # Values with nothing to encode skip quote(): every character, alone and among safe ones,
    # comes out as the binding's percent-encoding would make it.
    for code in [*range(0x300), 0x2028, 0xFEFF, 0x1F600]:
        char = chr(code)
        for value in (char, f"ab{char}cd"):
            event = Event(schema="Payment", data={}, source="/s", id=value, type="t")
            assert http_headers(event)["ce-id"] == quote(value, safe=_HEADER_SAFE), repr(value)
    event = Event(schema="Payment", data={}, source="https://example.com/a?b=c&d=[e]", id="x", type="t", time="2026-12-04T13:05:18.123Z")
    headers = http_headers(event)
    assert headers["ce-source"] == "https://example.com/a?b=c&d=[e]"
    assert headers["ce-time"] == "2026-12-04T13:05:18.123Z"


@settings(max_examples=100)
@given(events)
def test_outgoing_amqp_headers_are_the_rabbitmq_binding(event: Event) -> None:
    message = sdk_rabbitmq.RabbitMQMessage(prefixed_headers(event, "ce-"), "application/json", b"{}")
    found = sdk_rabbitmq.from_binary(message, JSONFormat(), CloudEvent)
    assert read_by_sdk(found) == expected(event)


def sdk_event(**extra: Any) -> CloudEvent:
    return CloudEvent(
        {
            "id": "ev-1",
            "source": "/crm",
            "type": "com.example.customer.updated",
            "specversion": "1.0",
            "time": datetime.fromisoformat("2026-12-01T10:00:00+00:00"),
            **extra,
        },
        {"customer_id": "c-1", "tier": "gold"},
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_what_the_sdk_sends_over_http_is_read_in_either_mode(mode: str) -> None:
    sent = sdk_event(subject="c-1 «gold» 100%")
    message = sdk_http.to_binary(sent, JSONFormat()) if mode == "binary" else sdk_http.to_structured(sent, JSONFormat())
    content_type = message.headers.get("content-type", message.headers.get("Content-Type", ""))
    document, attributes = from_http(message.headers, json.loads(message.body), content_type.split(";")[0])
    assert document == {"customer_id": "c-1", "tier": "gold"}
    assert (attributes["id"], attributes["source"], attributes["type"], attributes["subject"]) == (
        "ev-1",
        "/crm",
        "com.example.customer.updated",
        "c-1 «gold» 100%",
    )
    assert datetime.fromisoformat(attributes["time"]) == sent.get_time()


def test_the_incoming_attributes_give_the_event_its_id_time_and_subject_unless_emit_sets_them() -> None:
    sent = sdk_event(subject="c-1")
    message = sdk_http.to_structured(sent, JSONFormat())
    document, attributes = from_http(message.headers, json.loads(message.body), "application/cloudevents+json")
    plain = Emitter(EmitSpec.model_validate({"schema": "Customer", "key": "customer_id"}), source="/inbound/crm")
    event = plain.build(document, cloudevent=attributes)
    assert (event.id, event.subject, datetime.fromisoformat(event.time)) == ("ev-1", "c-1", sent.get_time())
    mapped = Emitter(EmitSpec.model_validate({"schema": "Customer", "id": "customer_id", "subject": "tier"}), source="/inbound/crm")
    event = mapped.build(document, cloudevent=attributes)
    assert (event.id, event.subject) == ("c-1", "gold")  # emit's own choices win


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        ({"id": "1", "source": "/s", "type": "t", "data": {}}, "lacks specversion"),
        ({"specversion": "1.0", "source": "/s", "type": "t"}, "lacks id"),
        ({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}, "specversion '0.3' is not supported"),
        (["not", "an", "object"], "is a JSON object, not list"),
    ],
)
def test_a_structured_event_without_what_the_spec_requires_is_refused_with_the_reason(envelope: Any, reason: str) -> None:
    with pytest.raises(EventRejected, match=reason):
        from_http({}, envelope, "application/cloudevents+json")


@pytest.mark.parametrize(
    "time",
    [
        "yesterday",
        "2026-12-01",  # a date alone: ISO 8601, not RFC 3339
        "2026-12-01T10:00:00",  # no zone: whoever reads it next takes it as their local time
        "20261201T100000Z",  # ISO 8601's basic form
        "2026-W49-1T10:00:00Z",  # a week date
        "2026-12-01T10:00Z",  # no seconds
        "9999-12-31T23:59:59-01:00",  # past year 9999 once in UTC: broke `bus reconcile`'s windows
        "2026-12-01T10:00:00+24:00",
        "٢٠٢٦-12-01T10:00:00Z",  # digits of another script
    ],
)
def test_a_time_that_is_not_rfc_3339_is_refused(time: str) -> None:
    plain = Emitter(EmitSpec.model_validate({"schema": "Customer"}), source="/inbound/crm")
    with pytest.raises(EventRejected, match="not an RFC 3339 timestamp"):
        plain.build({"customer_id": "c"}, cloudevent={"id": "1", "time": time})


RFC_3339_FORMS = [
    "2026-12-01T10:00:00Z",
    "2026-12-01t10:00:00.123456789z",
    "2026-12-01 10:00:00+05:30",
    "2026-12-01T10:00:00.123456789012-08:00",  # the RFC sets no limit to the fraction's digits
]


@pytest.mark.parametrize("time", RFC_3339_FORMS)
def test_an_rfc_3339_time_in_any_of_its_forms_is_taken_as_sent(time: str) -> None:
    plain = Emitter(EmitSpec.model_validate({"schema": "Customer"}), source="/inbound/crm")
    assert plain.build({"customer_id": "c"}, cloudevent={"id": "1", "time": time}).time == time


def test_a_plain_request_carries_no_attributes() -> None:
    assert from_http({"Content-Type": "application/json", "X-Other": "1"}, {"a": 1}, "application/json") == ({"a": 1}, {})
