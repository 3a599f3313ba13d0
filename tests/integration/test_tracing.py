"""One trace from the sender's request to the target's call: the traceparent crosses Kafka and the
router, and with an OTLP exporter configured the hub's spans arrive at a real OTLP/HTTP receiver
(protobuf, as an OpenTelemetry Collector takes them) with the right parents."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from examples.kit.standin import serve
from tests.conftest import require_service
from tests.support.hub import build_hub, flow_config, payment, payment_hub_config, write_config
from tests.support.target import Target

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.services: set[str] = set()

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in message.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": {a.key: a.value.string_value for a in span.attributes},
                        }
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return await serve(app)


async def test_one_trace_from_the_senders_request_to_the_targets_call(tmp_path: Path, bootstrap: str) -> None:
    collector = Collector()
    runner, port = await collector.start()
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["tracing"] = {"exporter": "otlp", "endpoint": f"http://127.0.0.1:{port}/v1/traces", "service_name": "bus-under-test"}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
                sent = await client.post(
                    "/hooks/payments",
                    json=payment(1),
                    headers={"X-API-Key": "k1", "traceparent": f"00-{TRACE}-{SENDER_SPAN}-01"},
                )
            assert sent.status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1)
        # The hub has stopped: its spans were flushed on the way out.
        [receive] = [s for s in collector.spans if s["name"] == "receive payments"]
        [route] = [s for s in collector.spans if s["name"].startswith("route ") and s["name"].endswith(".canonical.Payment")]
        [deliver] = [s for s in collector.spans if s["name"] == "deliver erp"]
        assert collector.services == {"bus-under-test"}
        assert receive["trace"] == route["trace"] == deliver["trace"] == TRACE
        assert receive["parent"] == SENDER_SPAN  # the sender's span is the root
        assert route["parent"] == receive["id"]  # across Kafka to the router
        assert deliver["parent"] == route["id"]  # across Kafka again, to the delivery
        assert route["attributes"]["messaging.system"] == "kafka" and route["attributes"]["messaging.operation.type"] == "process"
        assert route["attributes"]["messaging.destination.name"].endswith(".canonical.Payment")
        # The target sees the same trace, with the delivery span as its parent.
        assert target.accepted[0].headers["traceparent"] == f"00-{TRACE}-{deliver['id']}-01"
    finally:
        await target.stop()
        await runner.cleanup()


async def test_without_an_exporter_the_senders_traceparent_reaches_the_target_unchanged(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert not hub.tracing.enabled
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
                headers = {"X-API-Key": "k1", "traceparent": f"00-{TRACE}-{SENDER_SPAN}-01"}
                assert (await client.post("/hooks/payments", json=payment(1), headers=headers)).status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1)
        assert target.accepted[0].headers["traceparent"] == f"00-{TRACE}-{SENDER_SPAN}-01"
    finally:
        await target.stop()


async def test_queue_and_stream_inbounds_carry_the_producers_trace_context(tmp_path: Path, bootstrap: str) -> None:
    """A NATS message's `traceparent` header and a Kafka record's `traceparent` header continue the
    producer's trace: the target's call carries the same trace id."""
    require_service("NATS", "127.0.0.1", 4222)
    run = uuid.uuid4().hex[:8]
    source_topic = f"src-{run}"
    emit = {
        "schema": "Payment",
        "id": "id",
        "key": "id",
        "map": {"payment_id": "id", "amount": "1", "currency": '"eur"', "customer_id": '"c"'},
    }
    target = await Target().start()
    inbound = [
        {"name": "orders", "type": "nats", "url": "nats://127.0.0.1:4222", "stream": f"TR_{run}", "subject": f"tr{run}.>", "emit": emit},
        {"name": "partner", "type": "kafka", "bootstrap": bootstrap, "topics": [source_topic], "session_timeout_ms": 3000, "emit": emit},
    ]
    config = flow_config(bootstrap, inbound, [{"name": "erp", "type": "http", "url": f"{target.url}/erp"}], schema="Payment")
    nats_trace, kafka_trace = uuid.uuid4().hex, uuid.uuid4().hex
    connection = await nats.connect("nats://127.0.0.1:4222")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)):
            headers = {"traceparent": f"00-{nats_trace}-{SENDER_SPAN}-01"}
            await connection.jetstream().publish(f"tr{run}.created", json.dumps({"id": "from-nats"}).encode(), headers=headers)
            record_headers = [("traceparent", f"00-{kafka_trace}-{SENDER_SPAN}-01".encode())]
            await producer.send_and_wait(source_topic, json.dumps({"id": "from-kafka"}).encode(), headers=record_headers)
            await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == 2)
        traces = {c.headers["Idempotency-Key"]: c.headers["traceparent"].split("-")[1] for c in target.accepted}
        assert traces == {"from-nats": nats_trace, "from-kafka": kafka_trace}
    finally:
        await producer.stop()
        await connection.jetstream().delete_stream(f"TR_{run}")
        await connection.close()
        await target.stop()
