"""HTTP/1.1 for the webhook server, on httptools (llhttp, the parser Node.js uses).

aiohttp's server cost 112 CPU-us per request on this machine against 47 for bare sockets
(bench/http_ends.py): routing tables, middlewares, multidicts, a StreamReader and a payload
writer per request, none of which a webhook needs. This module speaks just the part of HTTP/1.1
webhook senders use, completely and strictly:

- keep-alive (HTTP/1.1 by default, ``Connection: close``, HTTP/1.0) and pipelined requests,
  answered in order, one at a time per connection;
- bodies with a length or chunked, read by the handler when it wants them
  (``Request.read``): a 100 Continue is sent only then, and reading from the socket pauses
  while a handler has more than ``_BODY_HIGH_WATER`` bytes of body it has not asked for;
- llhttp refuses what request smugglers send (both Content-Length and Transfer-Encoding, bad
  chunk sizes, bare CR or LF, invalid header names): 400 and the connection is closed;
- a request head over ``_MAX_HEAD_BYTES`` or ``_MAX_HEADERS`` fields is answered 431, a transfer
  coding other than chunked (gzip: the body would reach the handler still compressed) 501;
  protocol upgrades (h2c, WebSocket) are answered 400 rather than half-served;
- an answer sent before the body was read whole (401, 413, 415...) closes the connection, so
  the rest of the body is never taken for the next request.

Idle connections, and clients that send their head too slowly, are closed by the server's
sweeper (``web.py``), not by a timer per request.
"""

from __future__ import annotations

__all__ = ["Connection", "Request", "Response", "json_response"]

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from bus.jsontext import compact
from bus.metrics import HTTP_REFUSED

log = logging.getLogger("bus.runtime.web")

_MAX_HEAD_BYTES = 64 * 1024  # request line and header fields together
_MAX_HEADERS = 128
_BODY_HIGH_WATER = 1024 * 1024  # body bytes buffered for a handler before reading pauses
_LINGER_S = 10.0  # how long a closing connection keeps reading what the client still sends
# Requests a client may send ahead of their answers (HTTP/1.1 pipelining; webhook senders send one
# at a time). One read of the socket can hold thousands of small requests, each parsed at once.
_MAX_AHEAD = 64

_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_UNSAFE_IN_VALUE = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


class Headers(dict[str, str]):
    """A request's header fields by lower-case name; ``get`` and ``[]`` take any case. A field sent
    more than once reads as its values joined with ", " (RFC 9110, 5.3), so a second copy of an
    API key or signature header cannot slip past a check that reads only the first."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class Request:
    """One request: its head at once, its body through ``read``."""

    __slots__ = (
        "_chunks", "_connection", "_expects_continue", "_host", "_limit", "_size", "_waiter",
        "complete", "headers", "keep_alive", "lost", "method", "target",
    )  # fmt: skip

    def __init__(self, connection: Connection, method: str, target: str, headers: Headers, *, keep_alive: bool, host: str) -> None:
        self.method = method
        self.target = target  # as sent: path and query, percent-encoded
        self.headers = headers
        self.keep_alive = keep_alive
        self.complete = False  # the whole body has arrived
        self.lost = ""  # why the body will never be complete: the client went, or its bytes stopped being HTTP
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = 1 << 62  # until a handler says how much it takes
        self._waiter: asyncio.Future[None] | None = None
        self._connection = connection
        self._expects_continue = headers.get("expect", "").lower() == "100-continue"
        self._host = host

    @property
    def path(self) -> str:
        """The path without the query, percent-decoded."""
        target = self.target
        if target[:1] != "/":  # absolute form (``http://host/path``), as proxies send
            target = urlsplit(target).path or "/"
        path = target.partition("?")[0]
        return unquote(path) if "%" in path else path

    @property
    def url(self) -> str:
        """The URL the client called, as far as the hub can see it (no TLS here: ``http``)."""
        if self.target[:1] != "/":
            return self.target
        return f"http://{self.headers.get('host') or self._host}{self.target}"

    @property
    def content_length(self) -> int | None:
        value: str | None = self.headers.get("content-length")
        return int(value) if value is not None else None  # llhttp refused a length that is not a number

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case; ``application/octet-stream`` when absent."""
        value: str = self.headers.get("content-type", "")
        return value.partition(";")[0].strip().lower() if value else "application/octet-stream"

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None as soon as it grows past ``limit`` bytes (a chunked body has no
        length to check first). ConnectionResetError when the client goes away before its end."""
        self._limit = limit
        while not self.complete:
            if self._size > limit:
                return None
            if self.lost:
                raise ConnectionResetError(self.lost)
            if self._expects_continue:
                self._expects_continue = False
                self._connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._waiter = asyncio.get_running_loop().create_future()
            self._connection.want_body()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._size > limit:
            return None
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def fail(self, reason: str) -> None:
        if not self.complete and not self.lost:
            self.lost = reason
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._chunks.append(chunk)  # past the limit the body is refused: keep none of the rest
        elif self._waiter is not None:
            self._wake()  # a reader past its limit stops now, not at the body's end


class Response:
    """An answer. A ``Connection: close`` header asks for the connection to be closed after it;
    the server writes that header itself, from what the connection does."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, status: int = 200, body: bytes = b"", *, headers: dict[str, str] | None = None, content_type: str = "text/plain"
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, compact(data).encode(), headers=headers, content_type="application/json; charset=utf-8")


def _encoded(response: Response, *, keep: bool, with_body: bool = True) -> bytes:
    """The answer's bytes: status line, Date, Content-Type and Content-Length, its headers, whether
    the connection stays open, and the body (not for a HEAD request)."""
    head = [
        b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        % (response.status, _REASONS.get(response.status, b"Unknown"), _Clock.now(), response.content_type.encode(), len(response.body))
    ]
    for name, value in response.headers.items():
        if name.lower() != "connection":  # said below, from what the connection does
            head.append(b"%s: %s\r\n" % (_header_bytes(name), _header_bytes(value)))
    head.append(b"\r\n" if keep else b"Connection: close\r\n\r\n")
    if with_body:
        head.append(response.body)
    return b"".join(head)


def _asks_to_close(response: Response) -> bool:
    return any(k.lower() == "connection" and v.lower() == "close" for k, v in response.headers.items())


def _header_bytes(text: str) -> bytes:
    """A header name or value as bytes; a CR, LF or NUL (a reason quoting a sender's text) becomes a space."""
    return text.translate(_UNSAFE_IN_VALUE).encode("latin-1", "replace")


class _Clock:
    """The Date header, formatted once a second rather than per answer."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


class _HeadTooLarge(Exception):
    pass


class _TooFarAhead(Exception):
    pass


class _UnknownCoding(Exception):
    pass


Dispatch = Callable[[Request], Awaitable[Response]]


class Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, dispatch: Dispatch, connections: set[Connection], *, server: str = "webhooks", limit: int | None = None) -> None:
        self._dispatch = dispatch
        self._limit = limit  # connections open at once, at most (this one refused beyond it)
        self._server = server  # names the server in the refusal counter
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._host = ""
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._parsing: Request | None = None  # the request whose head or body is arriving
        self._active: Request | None = None  # the request being answered
        self._waiting: deque[Request] = deque()  # pipelined requests, in the order they came
        self._paused = False
        self._write_blocked = False  # the client does not read its answers as fast as they come
        self._too_far_ahead: str | None = None  # why the request past _MAX_AHEAD is refused once those before it are answered
        self._closing = False
        self._task: asyncio.Task[None] | None = None  # the handler of the request in hand
        self._discarding = False  # answered and closing: what still arrives is dropped
        self._broken = False  # the byte stream stopped being HTTP: parse nothing more, close after the answer owed
        # Since when no request has been in hand (idle, or a head still arriving), for the server's
        # sweeper; None while one is being answered.
        self.quiet_since: float | None = time.monotonic()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._limit is not None and len(self._connections) >= self._limit:
            HTTP_REFUSED.labels(self._server, "too_many_connections").inc()
            self._closing = True
            transport.abort()  # no answer: writing one would hold the descriptor for as long again
            return
        self._connections.add(self)
        sockname = transport.get_extra_info("sockname")
        self._host = f"{sockname[0]}:{sockname[1]}" if isinstance(sockname, tuple) else "localhost"

    def data_received(self, data: bytes) -> None:
        if self._closing or self._discarding or self._broken or self._too_far_ahead is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported here; send the request as plain HTTP/1.1", why="upgrade")
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, str(exc.__context__), why="head_too_large")
            elif isinstance(exc.__context__, _UnknownCoding):
                self._refuse(501, str(exc.__context__), why="transfer_coding")
            elif isinstance(exc.__context__, _TooFarAhead):
                # The requests before it are answered first, in order; then it is refused, and the
                # connection closed (nothing after it was parsed).
                HTTP_REFUSED.labels(self._server, "pipelined").inc()
                self._too_far_ahead = str(exc.__context__)
                self._pause()
            else:
                raise
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}", why="malformed")

    def pause_writing(self) -> None:
        """The transport holds more answers than its high-water mark: the client is not reading
        them. No request is started and nothing read until they drain; answers piled up in memory
        without end, as fast as a client could send requests it never read the answers of."""
        self._write_blocked = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_blocked = False
        if self._active is None and not self._closing and not self._discarding:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        for request in (self._parsing, self._active, *self._waiting):
            if request is not None:
                request.fail("the client closed the connection before the body was complete")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))
        self._count(len(name) + len(value))
        if len(self._fields) > _MAX_HEADERS:
            raise _HeadTooLarge(f"more than {_MAX_HEADERS} header fields")

    def on_headers_complete(self) -> None:
        headers = Headers()
        for name, value in self._fields:
            key = name.decode("latin-1").lower()
            text = value.decode("utf-8", "replace")
            headers[key] = f"{dict.__getitem__(headers, key)}, {text}" if key in headers else text
        if (coding := headers.get("transfer-encoding")) is not None and coding.strip().lower() != "chunked":
            # llhttp takes "gzip, chunked" as chunked and hands on the body still compressed; RFC 9112
            # (6.1): a coding the server does not understand is answered 501.
            raise _UnknownCoding(f"Transfer-Encoding {coding[:60]!r} is not supported: send the body as it is, or chunked")
        parser = self._parser
        method, target = parser.get_method().decode("ascii"), self._url.decode("latin-1")
        request = Request(self, method, target, headers, keep_alive=parser.should_keep_alive(), host=self._host)
        self._parsing = request
        if parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade once the head is parsed
        if self._active is None and not self._write_blocked:
            self._start(request)
        else:
            if len(self._waiting) >= _MAX_AHEAD:
                raise _TooFarAhead(f"more than {_MAX_AHEAD} requests sent ahead of their answers; send them one at a time")
            self._waiting.append(request)
            self._pause()  # one request in hand and one waiting is enough; the socket buffers the rest

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        request._add(body)
        if request._waiter is None and request._size > _BODY_HIGH_WATER:
            self._pause()  # nobody asked for this body yet: let the client wait in TCP, not in memory

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        request.complete = True
        request._wake()

    # serving

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise _HeadTooLarge(f"the request head exceeds {_MAX_HEAD_BYTES} bytes")

    def _start(self, request: Request) -> None:
        self._active = request
        self.quiet_since = None
        self._task = asyncio.get_running_loop().create_task(self._serve(request))  # held: the loop keeps only a weak reference

    async def _serve(self, request: Request) -> None:
        try:
            response = await self._dispatch(request)
        except Exception:
            log.exception("webhook server: the handler of %s %s failed; answered 500", request.method, request.path)
            response = json_response({"error": "internal error; see the hub's log"}, status=500)
        self._answer(request, response)

    def _answer(self, request: Request, response: Response) -> None:
        keep = request.keep_alive and request.complete and not self._closing and not self._broken and not _asks_to_close(response)
        self.write(_encoded(response, keep=keep, with_body=request.method != "HEAD"))
        if not keep:
            if request.complete and not self._broken:
                self.close()
            else:
                self._linger()
            return
        self._active = None
        if self._write_blocked:  # resume_writing takes the next request once the client reads
            self.quiet_since = time.monotonic()  # and the sweeper closes a connection whose client never does
            return
        self._next()

    def _next(self) -> None:
        """Start the next request waiting, if any; read again once none waits (reading resumed
        while requests waited, a client sending requests without end filled memory with them)."""
        if self._waiting:
            self._start(self._waiting.popleft())
        elif self._too_far_ahead is not None:  # every request before it answered: refuse it, and close
            self.write(_encoded(json_response({"error": self._too_far_ahead}, status=429), keep=False))
            self._linger()
            return
        else:
            self.quiet_since = time.monotonic()
        if not self._waiting and self._too_far_ahead is None:
            self._resume()

    def _refuse(self, status: int, reason: str, *, why: str) -> None:
        """Answer a request that could not be parsed, and close: what follows it cannot be trusted.
        Counted, not logged: a scanner or a broken sender could fill the log, and the counter
        (by ``why``) is what an alert reads."""
        self._broken = True
        HTTP_REFUSED.labels(self._server, why).inc()
        if self._active is not None:
            # The handler in hand answers first. If its own body broke, its read says why.
            self._active.fail(reason)
            return
        self.write(_encoded(json_response({"error": reason}, status=status), keep=False))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer the client may still be sending a request body over: send the
        answer and a FIN, then read and drop what still comes until the client closes (or
        ``_LINGER_S`` passed). Closing at once would reset the connection with the client's bytes
        unread, and a reset can destroy the answer before the client reads it."""
        if self._closing or self._discarding or self._transport is None:
            return
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._discarding = True
        self._resume()
        asyncio.get_running_loop().call_later(_LINGER_S, self.close)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._closing and not self._discarding:
            self._transport.write(data)

    def close(self) -> None:
        if not self._closing and self._transport is not None:
            self._closing = True
            self._transport.close()

    def want_body(self) -> None:
        """The handler waits for body: read from the socket again."""
        self._resume()

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self._transport is not None and not self._closing:
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        """Stop the handler in hand (the server stops and it outlived the drain) and close."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.close()
