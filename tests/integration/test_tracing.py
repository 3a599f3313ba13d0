"""One trace from the sender's request to the target's call: the traceparent crosses Kafka and the
router, and with an OTLP exporter configured the hub's spans arrive at a real OTLP/HTTP receiver
(protobuf, as an OpenTelemetry Collector takes them) with the right parents."""

from __future__ import annotations

from pathlib import Path

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.http_server import serve
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, str]] = []
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
        [deliver] = [s for s in collector.spans if s["name"] == "deliver erp"]
        assert collector.services == {"bus-under-test"}
        assert receive["trace"] == deliver["trace"] == TRACE
        assert receive["parent"] == SENDER_SPAN  # the sender's span is the root
        assert deliver["parent"] == receive["id"]  # across Kafka and the router
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
