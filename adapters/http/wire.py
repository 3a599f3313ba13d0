"""The HTTP/1.1 client deliveries go through: one request, its whole answer, over kept-alive
connections, parsed by httptools (llhttp, the parser Node.js and uvicorn use).

Why not aiohttp's client, which the hub used before: a delivery is one small request and one small
answer, and aiohttp's general machinery (request and response objects, trace hooks, cookie jar,
payload writers, per-read timers) cost 149 CPU-us per call where the bare HTTP/1.1 of the
benchmark's load generator costs 46 (bench/http_ends.py); it was the largest single part of a
delivery. This client does what a delivery needs and nothing else:

- keep-alive connections per (scheme, host, port), at most ``limit`` open at once; a connection
  the target closed while idle is dropped before reuse;
- http and https (the adapter's TLS context, or the system's default verification);
- timeouts per phase: connecting within ``connect_timeout``, and no wait for the answer's next
  bytes longer than ``read_timeout`` (``TimeoutError``);
- answers with Content-Length, chunked, or ending with the connection; gzip and deflate decoded
  (none is asked for);
- answers kept in memory are bounded: a body over ``max_answer_bytes`` (after decoding, so a
  compression bomb is stopped too) or a head over 64 KiB is a WireError naming the limit, and
  the connection is closed: a target that answers without end cannot exhaust the hub's memory;
- a header name or value holding a line break or NUL is refused (``ValueError``) before anything
  is sent: it would split the request;
- no redirects (a 3xx is the answer), no cookies;
- the proxy the environment names, as every HTTP client honours it (``HTTPS_PROXY``,
  ``HTTP_PROXY``, ``NO_PROXY``; credentials in the proxy's URL go as ``Proxy-Authorization``):
  an https target through a CONNECT tunnel, an http one with its absolute URL. Deliveries went
  straight to the target, where a company's network lets only its proxy out: they failed while
  the pollers (httpx, which honours the same variables) worked.

A target that closes a kept-alive connection at the moment a request is sent on it gets that
request again on a new connection when the method is idempotent (PUT, DELETE); otherwise the
error is the caller's to retry (a delivery carries its ``Idempotency-Key``).
"""

from __future__ import annotations

__all__ = ["Response", "WireClient", "WireError", "via_wire"]

import asyncio
import base64
import math
import re
import ssl
import urllib.request
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlencode

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bus.adapter_api import is_loopback
from bus.credentials.client_credentials import Post, Unreachable

_BAD_NAME = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # an HTTP token (RFC 9110 5.6.2)
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_IDEMPOTENT = frozenset({"PUT", "DELETE", "GET", "HEAD", "OPTIONS"})
_NO_BODY = frozenset({204, 304})
_MAX_HEAD_BYTES = 64 * 1024


def _refuse(headers: dict[str, str]) -> None:
    """Name the header that cannot be sent (a ValueError: the request is at fault, not the target)."""
    for name, value in headers.items():
        if not name or _BAD_NAME.search(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if _BAD_VALUE.search(value):
            raise ValueError(f"header {name} holds a line break or NUL character")


class _TooLarge(Exception):
    """Raised in a parser callback: the answer outgrew its limit."""


class _Unsolicited(Exception):
    """Raised in a parser callback: the target sent another answer after the one asked for."""


class WireError(ConnectionError):
    """The target's connection failed or its answer could not be read (an OSError: retryable)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


class _Connection(asyncio.Protocol):
    """One connection: a request written whole, its answer parsed as it arrives."""

    def __init__(self, key: tuple[str, str, int], read_timeout: float, max_answer_bytes: int, answer_within: float = math.inf) -> None:
        self.key = key
        self._max_answer_bytes = max_answer_bytes
        self._body_bytes = 0
        self._head_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0  # the loop's time it was put back in the pool
        self._read_timeout = read_timeout
        self._parser = httptools.HttpResponseParser(self)
        # Lines that end with a bare LF, as older and hand-written servers answer (RFC 9112 2.2: a
        # recipient MAY take LF alone as a line's end; curl and browsers do). Strictness here would
        # protect no one (the hub is the answer's last reader, not a proxy that passes it on) and
        # such a target could never be delivered to. Everything else stays strict (two lengths).
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._answer: asyncio.Future[Response] | None = None
        # One timer per connection, re-armed only when it fires early, rather than one per
        # request and per read: each would be a TimerHandle pushed on the loop's heap and cancelled.
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0  # the loop's time of the request sent or the answer's last bytes
        # The whole answer within this, however its bytes come: a target that sends one byte every
        # few seconds (a broken proxy, or one that means it) never lets the read timeout fire.
        self._answer_within = answer_within
        self._deadline = math.inf
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._body: list[bytes] = []
        self.got_bytes = False
        self._headers_done = False
        self._until_close = False  # an answer with neither length nor chunks: it ends with the connection
        self._status = 0
        self._keep = False  # the answer allows the connection to be kept (HTTP/1.1 without Connection: close)

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        if self._headers_done and self._until_close:
            self._finish()
        else:
            self._fail(WireError(f"the target closed the connection{' mid-answer' if self.got_bytes else ''}"))

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes no request asked for: whatever they are, the connection's answers can no longer be paired
            return
        self.got_bytes = True
        self._arm()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(WireError("the target asked to switch protocols"))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Unsolicited):
                self.close()  # the answer asked for is complete and kept; what follows it was never asked for
                return
            if not isinstance(exc.__context__, _TooLarge):
                raise
            self._fail(WireError(str(exc.__context__)))
            self.close()  # the rest of the answer is never read: the connection cannot be reused
        except httptools.HttpParserError as exc:
            self._fail(WireError(f"the target's answer is not HTTP/1.1: {exc}"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            # A second answer in the same bytes as the first (a target that answers twice): its
            # head and body would have been read into the first's, already complete.
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise _TooLarge(f"the target's answer has a head over {_MAX_HEAD_BYTES} bytes")
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._status = self._parser.get_status_code()
        self._until_close = status not in _NO_BODY and "Content-Length" not in self._headers and "Transfer-Encoding" not in self._headers

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_answer_bytes:
            raise _TooLarge(f"the target's answer is over {self._max_answer_bytes} bytes; it was not read")
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._headers, self._body, self._headers_done = CIMultiDict(), [], False
            self._body_bytes = self._head_bytes = 0
            return
        # Read now: once the message is complete the parser starts on the next one.
        self._status, self._keep = status, self._parser.should_keep_alive()
        self._finish()

    # -- the exchange ------------------------------------------------------------------------------
    async def exchange(self, request: bytes) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._headers, self._body, self.got_bytes, self._headers_done = CIMultiDict(), [], False, False
        self._body_bytes = self._head_bytes = 0
        self._keep = False
        self._deadline = loop.time() + self._answer_within
        self.transport.write(request)
        self._arm()
        answer = await self._answer
        body, encoding = answer.body, answer.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(47 if encoding != "deflate" else 15)  # 47: gzip or zlib header
            try:
                body = decoder.decompress(body, self._max_answer_bytes + 1)
            except zlib.error as exc:
                raise WireError(f"the target's {encoding} answer cannot be decoded: {exc}") from exc
            if len(body) > self._max_answer_bytes:
                raise WireError(f"the target's {encoding} answer decodes to over {self._max_answer_bytes} bytes; it was not read")
        return answer if body is answer.body else Response(answer.status, body, answer.headers)

    @property
    def keep_alive(self) -> bool:
        return not self.closed and not self._until_close and self._keep

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        """No wait for the answer's next bytes longer than the read timeout."""
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(min(self._last_activity + self._read_timeout, self._deadline), self._check)

    def _check(self) -> None:
        self._timer = None
        if self._answer is None or self._answer.done() or self.closed:
            return  # no answer awaited: the next request arms it again
        due = min(self._last_activity + self._read_timeout, self._deadline)
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            self._expire(whole=loop.time() >= self._deadline)
        else:
            self._timer = loop.call_at(due, self._check)

    def _expire(self, *, whole: bool = False) -> None:
        if whole:
            self._fail(TimeoutError(f"the answer did not end within {self._answer_within:g}s (its bytes came slowly)"))
        else:
            self._fail(TimeoutError(f"no answer within {self._read_timeout:g}s"))
        self.close()  # what is late on it would be read as the next request's answer

    def _finish(self) -> None:
        """The answer is whole: taken now, as it stands (the parser goes on with any bytes after it)."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Response(self._status, b"".join(self._body), CIMultiDictProxy(self._headers)))

    def _fail(self, exc: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()


class WireClient:
    def __init__(
        self,
        *,
        limit: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        keepalive: float = 30.0,
        max_answer_bytes: int = 16 * 1024 * 1024,
        answer_within: float = math.inf,
    ) -> None:
        self._max_answer_bytes = max_answer_bytes
        self._answer_within = answer_within
        self._slots = asyncio.Semaphore(limit)
        # A connection idle longer than this is closed rather than reused: a target behind a
        # load balancer or a DNS name that moved is found again, as a new connection would.
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._tls = tls
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self.connections_made = 0  # for tests and diagnostics: kept-alive connections are reused
        self._proxies = urllib.request.getproxies_environment()  # read once: HTTPS_PROXY, HTTP_PROXY, NO_PROXY
        self._routes: dict[tuple[str, str, int], URL | None] = {}  # per target: its proxy, or None

    async def request(self, method: str, url: URL, headers: dict[str, str], body: bytes = b"") -> Response:
        """``method url`` with ``headers`` and ``body``; the whole answer. Raises ValueError for a
        request that cannot be sent (a bad URL or header), TimeoutError, or OSError (WireError)."""
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"cannot send a request to {url}: only http and https URLs with a host")
        key = (url.scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        proxy = self._routes[key] if key in self._routes else self._route(key)
        if proxy is not None and key[0] == "http":  # through the proxy: the request names the whole URL
            head = self._head(method, url, {**headers, **_proxy_authorization(proxy)}, body, target=str(url.with_fragment(None)))
        else:
            head = self._head(method, url, headers, body)
        async with self._slots:
            connection = await self._connection(key)
            try:
                try:
                    answer = await connection.exchange(head + body)
                except WireError:
                    if not (connection.reused and not connection.got_bytes and method in _IDEMPOTENT):
                        raise
                    self._forget(connection)
                    connection = await self._connection(key, fresh=True)  # the target closed it as we sent: once more
                    answer = await connection.exchange(head + body)
            except BaseException:
                self._forget(connection)  # its state is unknown (cancelled, timed out, failed): never reused
                raise
            if connection.keep_alive:
                connection.reused = True
                connection.idle_since = asyncio.get_running_loop().time()
                self._idle.setdefault(key, []).append(connection)
            else:
                self._forget(connection)
        return answer

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _route(self, key: tuple[str, str, int]) -> URL | None:
        """The proxy the environment names for this target (None: straight to it), found once. A
        loopback target never goes through one, as Go's clients do: a proxy's loopback is not ours."""
        scheme, host, port = key
        named = self._proxies.get(scheme)
        bypass = bool(named) and (
            is_loopback(host) or urllib.request.proxy_bypass_environment(f"{host}:{port}", self._proxies)  # type: ignore[attr-defined]
        )
        proxy = URL(named if "://" in named else f"http://{named}") if named and not bypass else None
        self._routes[key] = proxy
        return proxy

    def _head(self, method: str, url: URL, headers: dict[str, str], body: bytes, *, target: str | None = None) -> bytes:
        host = url.host_port_subcomponent
        # One search over every name and every value (the common case: nothing wrong); the
        # offender is looked for only when there is one.
        if _BAD_NAME.search("".join(headers)) or _BAD_VALUE.search("".join(headers.values())) or "" in headers:
            _refuse(headers)
        lines = ["", f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT", "PATCH") else ""]
        for name, value in headers.items():
            lowered = name.lower()
            if lowered == "host":
                host = value  # a configured Host (a target reached by address) wins over the URL's
            elif lowered not in ("content-length", "transfer-encoding", "connection"):  # the client's own
                lines.append(f"{name}: {value}\r\n")
        lines[0] = f"{method} {target or url.raw_path_qs} HTTP/1.1\r\nHost: {host}\r\n"
        lines.append("\r\n")
        try:
            return "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"a header holds characters HTTP/1.1 cannot carry: {exc}") from exc

    async def _connection(self, key: tuple[str, str, int], *, fresh: bool = False) -> _Connection:
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed and loop.time() - connection.idle_since < self._keepalive:
                return connection
            self._forget(connection)
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()  # once: loading the system's CAs takes milliseconds
            tls = self._tls
        proxy = self._routes.get(key)
        if proxy is not None and proxy.scheme != "http":  # said at each try (retried), never taken for the target's fault
            raise WireError(f"the proxy {proxy.scheme}://{proxy.raw_host}:{proxy.port} is reached over {proxy.scheme}; the "
                            "delivery client reaches proxies over plain http (name it http://, as most proxies are)")  # fmt: skip
        async with asyncio.timeout(self._connect_timeout):
            if proxy is not None and tls is not None:
                protocol = await self._tunnel(key, proxy, tls)
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Connection(key, self._read_timeout, self._max_answer_bytes, self._answer_within),
                    (proxy.raw_host or "") if proxy is not None else host,
                    (proxy.port or 80) if proxy is not None else port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        self.connections_made += 1
        self._open.add(protocol)
        return protocol

    async def _tunnel(self, key: tuple[str, str, int], proxy: URL, tls: ssl.SSLContext) -> _Connection:
        """A connection to an https target through the proxy's CONNECT tunnel, TLS end to end."""
        _, host, port = key
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        loop = asyncio.get_running_loop()
        raw, handshake = await loop.create_connection(_Tunnel, proxy.raw_host or "", proxy.port or 80)
        try:
            await handshake.ask(raw, proxy, where)
            transport = await loop.start_tls(raw, handshake, tls, server_hostname=host)
        except BaseException:
            raw.abort()
            raise
        if transport is None:  # the loop's type allows it; a transport that closed meanwhile
            raise WireError(f"TLS to {where} through the proxy {proxy.raw_host}:{proxy.port} could not start")
        connection = _Connection(key, self._read_timeout, self._max_answer_bytes, self._answer_within)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        return connection

    async def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close


class _Tunnel(asyncio.Protocol):
    """The CONNECT exchange with a proxy, before TLS starts over the same connection (a protocol,
    not a stream: a StreamWriter closes its transport when it is collected)."""

    def __init__(self) -> None:
        self._answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._got = bytearray()

    def data_received(self, data: bytes) -> None:
        self._got += data
        if b"\r\n\r\n" in self._got and not self._answer.done():
            self._answer.set_result(bytes(self._got))
        elif len(self._got) > _MAX_HEAD_BYTES and not self._answer.done():
            self._answer.set_exception(WireError("the proxy's answer to CONNECT has a head over 64 KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(WireError(f"the proxy closed the connection before answering CONNECT ({exc!r})"))

    async def ask(self, transport: asyncio.BaseTransport, proxy: URL, where: str) -> None:
        """CONNECT ``where``; WireError with the proxy's answer unless it is 200."""
        assert isinstance(transport, asyncio.Transport)
        asked = f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n"
        asked += "".join(f"{name}: {value}\r\n" for name, value in _proxy_authorization(proxy).items())
        transport.write((asked + "\r\n").encode("latin-1"))
        status = (await self._answer).split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["200"]:
            raise WireError(f"the proxy {proxy.raw_host}:{proxy.port} refused the tunnel to {where}: {status}")


def _proxy_authorization(proxy: URL) -> dict[str, str]:
    """Basic credentials for the proxy, from its URL (http://user:password@proxy:3128)."""
    if proxy.raw_user is None:
        return {}
    pair = f"{unquote(proxy.raw_user)}:{unquote(proxy.raw_password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}


def via_wire(client: WireClient) -> Post:
    """The OAuth2 token request (a form POST) through the adapter's own client: one client per adapter."""

    async def post(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        body = urlencode(form).encode()
        try:
            answer = await client.request("POST", URL(url), {"Content-Type": "application/x-www-form-urlencoded", **headers}, body)
        except (OSError, TimeoutError, ValueError) as exc:
            raise Unreachable(repr(exc)) from exc
        return answer.status, answer.body.decode("utf-8", errors="replace")

    return post
