"""``http_webhook``: events arrive as POSTed JSON, form or XML and are answered only after Kafka has them.

Answers: 202 accepted (body: the event id; with ``batch``, the ids of every element), 200 a repeated delivery id already accepted (nothing
produced again), 400 a body that does not parse or an event that does not fit its schema (body:
the reason, naming the field), 401 missing or wrong API key, JWT (with ``WWW-Authenticate``,
RFC 6750) or body signature (Stripe, Shopify, GitHub or generic HMAC: ``signatures.py``), 409 the
same delivery id is being processed right now, 413 body over ``max_body_bytes``, 415 a body type
not in ``accept``, 503 with Retry-After when Kafka did not acknowledge in time, the JWKS could
not be fetched, or the hub is shutting down. A 503 or a lost connection means "send it again".
"""

from __future__ import annotations

__all__ = ["WebhookInbound"]

import asyncio
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

from adapters.http.config import ApiKeyAuth, WebhookConfig
from adapters.http.contracts import body_check
from adapters.http.jwt_auth import JwtAuth, JwtVerifier, KeysUnavailable
from adapters.http.signatures import check_signature
from bus.adapter_api import (
    BodyCheck,
    Context,
    Emitter,
    EventRejected,
    EventTooLarge,
    Health,
    Inbound,
    KafkaUnavailable,
    Request,
    Response,
    brief,
    json_response,
    parse_json,
    parse_xml,
    redact,
)
from bus.cloudevents import from_http
from bus.ttl import TtlMap

_KINDS = {
    "application/json": "json",
    "application/cloudevents+json": "json",
    "application/x-www-form-urlencoded": "form",
    "application/xml": "xml",
    "text/xml": "xml",
}


def _kind(content_type: str) -> str | None:
    if content_type in _KINDS:
        return _KINDS[content_type]
    suffix = content_type.rpartition("+")[2]
    return {"json": "json", "xml": "xml"}.get(suffix) if "+" in content_type else None


# XML bodies above this size are parsed in a thread: expat on a large body holds the event loop
# (and so every other request) for as long as it takes.
_XML_INLINE_BYTES = 64 * 1024
# A batch's elements mapped between two turns of the event loop (about 10 ms of work).
_BATCH_SLICE = 500


# Charsets that need no decoding here: JSON's own detection (UTF-8, 16, 32) reads them.
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header, lower case, unquoted; None if absent."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


def _known_charset(charset: str | None) -> bool:
    """A text encoding Python knows (decoding refuses the codecs that are not: rot13, base64...; an
    empty input is not looked up at all)."""
    if charset is None or charset in _UTF8:
        return True
    try:
        b"a".decode(charset)
    except LookupError:
        return False
    except UnicodeDecodeError:  # one byte is not enough for it (utf-16): a text encoding all the same
        return True
    return True


async def _parse(kind: str, body: bytes, charset: str | None = None) -> Any:
    """The body as a document; ValueError with the reason when it does not parse (or nests too deep).
    A ``charset`` other than UTF-8 (a legacy system's ISO-8859-1 or windows-1252) decodes JSON and
    form bodies; an XML body says its own encoding in its declaration, which expat reads."""
    legacy = charset is not None and charset not in _UTF8
    if kind == "json":
        return parse_json(body.decode(charset) if legacy and charset is not None else body)
    if kind == "form":
        encoding = charset if legacy and charset is not None else "utf-8"  # for the raw bytes and the %-escapes alike
        fields = parse_qs(body.decode(encoding), keep_blank_values=True, strict_parsing=bool(body), encoding=encoding, errors="strict")
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    if len(body) <= _XML_INLINE_BYTES:
        return parse_xml(body)
    return await asyncio.to_thread(parse_xml, body)


class _Seen:
    """Delivery ids accepted within the window, with the ids of their events, and the ones in progress."""

    def __init__(self, window_s: float, max_entries: int) -> None:
        self.accepted: TtlMap[str] = TtlMap(window_s, max_size=max_entries)
        self.in_progress: set[str] = set()

    def earlier(self, delivery_id: str) -> str | None:
        return self.accepted.get(delivery_id)

    def remember(self, delivery_id: str, event_ids: str) -> None:
        self.accepted.put(delivery_id, event_ids)


def _problem(status: int, reason: str, **headers: str) -> Response:
    return json_response({"error": redact(reason)}, status=status, headers=headers)


class WebhookInbound(Inbound[WebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = WebhookConfig
    summary: ClassVar[str] = "Receive JSON events over HTTP POST; answer 202 only after Kafka acknowledged."

    def __init__(self, config: WebhookConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._emitter = Emitter(config.emit, source=f"/inbound/{config.name}")
        self._reads_headers = "$headers" in config.emit.model_dump_json()
        self._keys = [k.get_secret_value().encode() for k in config.auth.keys] if isinstance(config.auth, ApiKeyAuth) else []
        self._jwt = JwtVerifier(config.auth) if isinstance(config.auth, JwtAuth) else None
        self._seen = _Seen(config.dedupe.window.total_seconds(), config.dedupe.max_entries) if config.dedupe else None
        self._accepting = False
        self._body_timeout = config.body_timeout.total_seconds()
        self._contract: BodyCheck | None = None  # the senders' OpenAPI request body schema, read at start
        self.duplicates = 0  # repeated deliveries answered from memory, not stored again

    async def start(self) -> None:
        if self.ctx.web is None:
            raise RuntimeError(f"http_webhook {self.config.name} needs the hub's web server")
        if self.config.openapi is not None and self._contract is None:
            self._contract = await body_check(self.config.openapi, "the senders'")
        if not self._accepting:
            self.ctx.web.add_route("POST", self.config.path, self._handle)
            self._accepting = True
            self.ctx.logger.info("http_webhook %s accepting POST %s", self.config.name, self.config.path)

    async def hold(self) -> None:
        if self.ctx.web is not None:  # paused before this process started: its path answers 503, not 404
            self.ctx.web.add_route("POST", self.config.path, self._handle)

    async def stop(self) -> None:
        self._accepting = False  # new requests get 503 while in-flight ones finish
        if self._jwt is not None:
            await self._jwt.close()

    def progress(self) -> dict[str, int | str]:
        return {"duplicates": self.duplicates} if self._seen is not None else {}  # only with dedupe on

    async def health(self) -> Health:
        return Health(self._accepting, "" if self._accepting else "not accepting requests")

    async def _refused(self, request: Request) -> Response | None:
        """None when the caller is authorised, else the answer to give."""
        auth = self.config.auth
        if auth is None:
            return None
        offered = request.headers.get(auth.header, "")
        if isinstance(auth, ApiKeyAuth):
            # compare_digest against every key, with no early exit (`any` stops at the first match):
            # timing does not reveal which key matched or nearly matched.
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(offered.encode(), key)
            if offered and matched:
                return None
            return _problem(401, f"missing or invalid API key in header {auth.header}")
        assert self._jwt is not None
        if not offered:
            return _problem(401, f"missing bearer token in {auth.header}", **{"WWW-Authenticate": "Bearer"})
        try:
            claims, reason = await self._jwt.verify(offered)
        except KeysUnavailable as exc:
            self.ctx.logger.warning("http_webhook %s: %s", self.config.name, exc)
            return _problem(503, "the signing keys could not be fetched; retry", **{"Retry-After": "10"})
        if claims is None:
            quoted = reason.replace('"', "'")
            return _problem(401, reason, **{"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{quoted}"'})
        return None

    async def _handle(self, request: Request) -> Response:
        answer = await self._answer(request)
        if answer.status in (401, 403):
            self.sink.refused("unauthorized")
        elif 400 <= answer.status < 500 and answer.status != 409:  # 409: the same delivery is in flight
            self.sink.refused("rejected")
        return answer

    async def _answer(self, request: Request) -> Response:
        if not self._accepting:
            # Stopped: the hub is shutting down, or an operator paused this source (bus.app.source_pauses).
            return _problem(
                503, "not accepting requests now (the hub is stopping, or this endpoint is paused); retry later", **{"Retry-After": "5"}
            )
        if (refusal := await self._refused(request)) is not None:
            return refusal
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            return _problem(413, f"body of {request.content_length} bytes exceeds the limit of {self.config.max_body_bytes}")
        kind = _kind(request.content_type)
        if kind not in self.config.accept:
            return _problem(415, f"Content-Type {request.content_type!r} is not accepted here; send {', '.join(self.config.accept)}")
        charset = _charset(request.headers.get("content-type", ""))
        if not _known_charset(charset):
            return _problem(415, f"charset {charset!r} is not one this hub can read; send UTF-8")
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if coding not in ("", "identity"):  # a compressed body would be read as text, and refused as "invalid JSON"
            return _problem(
                415, f"Content-Encoding {coding!r} is not accepted here; send the body uncompressed", **{"Accept-Encoding": "identity"}
            )
        try:
            if request.complete:  # the usual case: the body came with the head, and no timer is needed
                body = await request.read(self.config.max_body_bytes)  # None past the limit
            else:
                async with asyncio.timeout(self._body_timeout):
                    body = await request.read(self.config.max_body_bytes)
        except ConnectionResetError as exc:  # the client went, or its body stopped being HTTP: nothing was produced
            return _problem(400, f"the request body was cut off: {exc}")
        except TimeoutError:
            return _problem(408, f"the body did not arrive within {self.config.body_timeout}", Connection="close")
        if body is None:
            return _problem(413, f"body exceeds the limit of {self.config.max_body_bytes} bytes")
        if self.config.signature is not None and (
            refused := check_signature(self.config.signature, request.headers, body, method=request.method, url=request.url)
        ):
            return _problem(401, refused)
        try:
            document: Any = await _parse(kind, body, charset)
            # CloudEvents in either content mode: the document to map, and its attributes (id, time...).
            document, cloudevent = from_http(request.headers, document, request.content_type)
        except (ValueError, UnicodeDecodeError) as exc:
            return _problem(400, f"invalid {kind.upper()}: {exc}")
        except EventRejected as exc:
            return _problem(400, str(exc))
        if self._contract is not None and kind == "json" and (problem := self._contract.problem(document)) is not None:
            return _problem(400, brief(f"the body breaks the contract ({self._contract.name}): {problem}"))
        delivery_id = request.headers.get(self.config.dedupe.header, "") if self.config.dedupe else ""
        if delivery_id and self._seen is not None:  # checked after auth: forged requests cannot fill the memory
            if (earlier := self._seen.earlier(delivery_id)) is not None:
                self.duplicates += 1
                return json_response({"id": earlier, "duplicate": True}, status=200)
            if delivery_id in self._seen.in_progress:
                return _problem(409, f"delivery {delivery_id} is being processed; retry if it fails", **{"Retry-After": "1"})
            self._seen.in_progress.add(delivery_id)
        try:
            if self.ctx.tracing.enabled:
                with self.ctx.tracing.span(
                    f"receive {self.config.name}",
                    request.headers.get("traceparent"),
                    kind="server",
                    attributes={"http.route": self.config.path},
                ) as traceparent:
                    ids = await self._store(document, traceparent, self._headers_of(request, cloudevent), cloudevent)
            else:
                ids = await self._store(document, request.headers.get("traceparent"), self._headers_of(request, cloudevent), cloudevent)
        except EventTooLarge as exc:
            return _problem(413, str(exc))
        except EventRejected as exc:
            return _problem(400, str(exc))
        except KafkaUnavailable as exc:
            retry = f"{exc.retry_after:.0f}" if exc.retry_after else "5"
            return _problem(503, "the event could not be stored; retry later", **{"Retry-After": retry})
        except Exception as exc:  # noqa: BLE001 - the sender's document broke something unforeseen: refuse it, not the server
            self.ctx.logger.warning("http_webhook %s: a body could not be mapped (%r); answered 400", self.config.name, exc)
            return _problem(400, brief(f"the body could not be mapped: {type(exc).__name__}: {exc}"))
        finally:
            if delivery_id and self._seen is not None:
                self._seen.in_progress.discard(delivery_id)
        answer = {"ids": ids} if self.config.batch else {"id": ids[0]}
        if delivery_id and self._seen is not None:
            self._seen.remember(delivery_id, ",".join(ids))  # only once Kafka has it: a failed attempt may be sent again
        return json_response(answer, status=202)

    def _headers_of(self, request: Request, cloudevent: Mapping[str, str]) -> dict[str, str] | None:
        """The request's headers for ``$headers`` in emit, by lower-case name; only built when the
        mapping reads them. A structured CloudEvent's attributes read as their binary-mode headers
        (``$headers["ce-source"]``), so a mapping reads them the same in either mode."""
        if not self._reads_headers:
            return None
        return {**{f"ce-{k}": v for k, v in cloudevent.items()}, **{name.lower(): value for name, value in request.headers.items()}}

    async def _store(
        self, document: Any, traceparent: str | None, headers: Mapping[str, str] | None = None, cloudevent: Mapping[str, str] | None = None
    ) -> list[str]:
        """Publish the body's event (or, with ``batch``, every element's); their ids once Kafka has them.
        A batch is mapped whole before anything is sent, so a bad element refuses the request
        with nothing published."""
        if not self.config.batch:
            event = self._emitter.build(document, traceparent=traceparent, headers=headers, cloudevent=cloudevent)
            await self.sink.publish(event)
            return [event.id]
        if not isinstance(document, list):
            raise EventRejected(f"batch: expected a JSON array, got {type(document).__name__}")
        if len(document) > self.config.max_batch_events:
            raise EventTooLarge(
                f"batch: {len(document):,} elements in one request; at most {self.config.max_batch_events:,} are taken "
                "(max_batch_events): send smaller batches"
            )
        events = []
        for n, element in enumerate(document):
            if n and not n % _BATCH_SLICE:
                await asyncio.sleep(0)  # the server's other requests (and the probes) are answered meanwhile
            try:
                event = self._emitter.build(element, traceparent=traceparent, headers=headers)
                self.sink.check(event)  # every element fits before any is sent: all or none
                events.append(event)
            except EventRejected as exc:
                raise type(exc)(f"element {n}: {exc}") from exc
        acks = [await self.sink.submit(event) for event in events]
        for ack in acks:
            await ack
        return [event.id for event in events]
