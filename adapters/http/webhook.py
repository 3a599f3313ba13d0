"""``http_webhook``: events arrive as POSTed JSON and are answered only after Kafka has them.

Answers: 202 accepted (body: the event id), 400 bad JSON or an event that does not fit its
schema (body: the reason, naming the field), 401 missing or wrong API key or body signature
(Stripe, Shopify, GitHub or generic HMAC: ``signatures.py``), 413 body over
``max_body_bytes``, 415 not JSON, 503 with Retry-After when Kafka did not acknowledge in time
or the hub is shutting down. A 503 or a lost connection means "send it again".
"""

from __future__ import annotations

__all__ = ["WebhookInbound"]

import hmac
import json
from typing import Any, ClassVar

from aiohttp import web

from adapters.http.config import WebhookConfig
from adapters.http.signatures import check_signature
from bus.adapter_api import Context, Emitter, EventRejected, Health, Inbound, KafkaUnavailable


def _problem(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


class WebhookInbound(Inbound[WebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = WebhookConfig
    summary: ClassVar[str] = "Receive JSON events over HTTP POST; answer 202 only after Kafka acknowledged."

    def __init__(self, config: WebhookConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._emitter = Emitter(config.emit, source=f"/inbound/{config.name}")
        self._keys = [k.get_secret_value().encode() for k in config.auth.keys] if config.auth else []
        self._accepting = False

    async def start(self) -> None:
        if self.ctx.web is None:
            raise RuntimeError(f"http_webhook {self.config.name} needs the hub's web server")
        if not self._accepting:
            self.ctx.web.add_route("POST", self.config.path, self._handle)
            self._accepting = True
            self.ctx.logger.info("http_webhook %s accepting POST %s", self.config.name, self.config.path)

    async def stop(self) -> None:
        self._accepting = False  # new requests get 503 while in-flight ones finish

    async def health(self) -> Health:
        return Health(self._accepting, "" if self._accepting else "not accepting requests")

    def _authorised(self, request: web.Request) -> bool:
        if self.config.auth is None:
            return True
        offered = request.headers.get(self.config.auth.header, "").encode()
        # compare_digest against every key: timing does not reveal which key nearly matched.
        return any(hmac.compare_digest(offered, key) for key in self._keys) if offered else False

    async def _read_limited(self, request: web.Request) -> bytes | None:
        """The body, or None as soon as it grows past the limit (chunked bodies have no length)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(65536):
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._accepting:
            return _problem(503, "the hub is shutting down; retry", **{"Retry-After": "5"})
        if not self._authorised(request):
            return _problem(401, f"missing or invalid API key in header {self.config.auth.header if self.config.auth else ''}")
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            return _problem(413, f"body of {request.content_length} bytes exceeds the limit of {self.config.max_body_bytes}")
        if (
            request.content_type not in ("application/json", "application/cloudevents+json")
            and request.content_type.split("+")[-1] != "json"
        ):
            return _problem(415, f"expected a JSON body (Content-Type application/json), got {request.content_type!r}")
        try:
            body = await self._read_limited(request)
        except ConnectionResetError:
            return _problem(400, "the request body was cut off")  # the client is gone; nothing was produced
        if body is None:
            return _problem(413, f"body exceeds the limit of {self.config.max_body_bytes} bytes")
        if self.config.signature is not None and (refused := check_signature(self.config.signature, request.headers, body)):
            return _problem(401, refused)
        try:
            document: Any = json.loads(body)
        except ValueError as exc:
            return _problem(400, f"invalid JSON: {exc}")
        try:
            event = self._emitter.build(document, traceparent=request.headers.get("traceparent"))
            await self.sink.publish(event)
        except EventRejected as exc:
            return _problem(400, str(exc))
        except KafkaUnavailable as exc:
            retry = f"{exc.retry_after:.0f}" if exc.retry_after else "5"
            return _problem(503, "the event could not be stored; retry later", **{"Retry-After": retry})
        return web.json_response({"id": event.id}, status=202)
