"""The webhook server's HTTP/1.1 (bus/runtime/http1.py, bus/runtime/web.py), spoken to over real
sockets byte by byte: keep-alive and pipelining, bodies read on demand, answers before the body,
hostile and malformed requests, slow clients, draining on stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from bus.runtime.http1 import _BODY_HIGH_WATER, _MAX_AHEAD, Request, Response, json_response
from bus.runtime.web import WebServer

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[Request], Awaitable[Response]]


async def echo(request: Request) -> Response:
    try:
        body = await request.read(1 << 20)
    except ConnectionResetError as exc:
        return json_response({"error": str(exc)}, status=400)
    if body is None:
        return json_response({"error": "too large"}, status=413)
    return json_response({
        "method": request.method, "path": request.path, "url": request.url, "body": body.decode(),
        "type": request.content_type, "key": request.headers.get("X-Key"),
    })  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    handler: Handler = echo, *, idle_timeout_s: float = 30.0, drain_timeout: float = 5.0, max_connections: int = 10_000
) -> AsyncIterator[WebServer]:
    server = WebServer("127.0.0.1", 0, idle_timeout_s=idle_timeout_s, drain_timeout=drain_timeout, max_connections=max_connections)
    server.add_route("POST", "/hooks/a b", handler)
    server.add_route("POST", "/hooks/x", handler)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """The server closed: an end of stream, or a reset when our own unsent bytes were refused."""
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 15) == b""


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("bus_http_refused_total", {"server": "webhooks", "reason": reason}) or 0.0


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: hub.test", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b'"one"', "X-Key: a") + post("/hooks/x", b'"two"') + post("/hooks/a%20b?q=1", b'"three"'))
        answers = [await answer_of(reader) for _ in range(3)]
        assert [json.loads(body)["body"] for _, _, body in answers] == ['"one"', '"two"', '"three"']
        assert all(status == 200 and "connection" not in headers for status, headers, _ in answers)
        third = json.loads(answers[2][2])
        assert third["path"] == "/hooks/a b"  # percent-decoded, without the query
        assert third["url"] == "http://hub.test/hooks/a%20b?q=1"  # as the client called it, for signatures over the URL
        assert json.loads(answers[0][2])["key"] == "a"  # header names in any case
        assert answers[0][1]["content-type"] == "application/json; charset=utf-8" and "date" in answers[0][1]
        writer.close()


async def test_requests_sent_too_far_ahead_are_answered_up_to_the_limit_then_refused() -> None:
    """One read of the socket can hold thousands of small pipelined requests. Reading went on while
    they waited: one client sending requests without end filled the hub's memory with them (1.3 GB
    in 9 s here), answering about 70 a second."""
    before = refused("pipelined")
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(post("/hooks/x", b'"%d"' % i) for i in range(1000)))
        answers = [await answer_of(reader) for _ in range(_MAX_AHEAD + 1)]  # the one in hand and those waiting
        assert [json.loads(body)["body"] for _, _, body in answers] == [f'"{i}"' for i in range(_MAX_AHEAD + 1)]
        status, headers, body = await answer_of(reader)
        assert (status, headers["connection"]) == (429, "close")
        assert f"more than {_MAX_AHEAD} requests sent ahead of their answers" in json.loads(body)["error"]
        await closed_by_server(reader)
        assert refused("pipelined") == before + 1
        writer.close()


async def test_a_client_that_reads_no_answers_is_not_answered_into_memory() -> None:
    """Answers a client does not read used to pile up in the hub's memory while it went on
    reading requests. Now it stops taking requests until the client reads, and none is lost."""
    answer, handled = b"x" * 65_536, 0

    async def large(request: Request) -> Response:
        nonlocal handled
        handled += 1
        await request.read(1 << 20)
        return Response(200, answer)

    async def all_handled(written: int) -> bool:
        for _ in range(40):
            if handled == written:
                return True
            await asyncio.sleep(0.05)
        return False

    async with serving(large) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        written = 0
        for _ in range(200):  # 200 x 32 answers of 64 KiB: 400 MB, were they all made
            writer.write(b"".join(post("/hooks/x", b"{}") for _ in range(32)))  # within the requests allowed ahead
            written += 32
            if not await all_handled(written):
                break  # the hub took no more requests: its answers wait for the client to read them
        else:
            raise AssertionError("the hub took every request while its answers went unread")
        [connection] = server._connections
        assert connection._transport is not None and connection._transport.get_write_buffer_size() < 1_000_000
        for _ in range(written):  # reading, the client gets every answer, in order
            status, _, body = await answer_of(reader)
            assert (status, len(body)) == (200, len(answer))
        writer.close()


async def test_connections_past_the_limit_are_closed_as_they_come_and_said(caplog: pytest.LogCaptureFixture) -> None:
    """A client opening connections without end (each idle for up to idle_timeout_s) took the
    process's file descriptors, and with them Kafka's connections and every adapter's."""
    before = refused("too_many_connections")
    async with serving(max_connections=5) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # the sixth
        await closed_by_server(reader)
        writer.close()
        assert refused("too_many_connections") == before + 1
        await asyncio.sleep(1.2)  # the sweeper's look
        assert any("5 connections open, its http.max_connections" in r.getMessage() for r in caplog.records)
        for _, one in held[:2]:
            one.close()
        await asyncio.sleep(1.2)
        assert "under http.max_connections: new ones are served again" in caplog.records[-1].getMessage()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b'"again"'))
        status, _, body = await answer_of(reader)
        assert (status, json.loads(body)["body"]) == (200, '"again"')
        writer.close()
        for _, one in held[2:]:
            one.close()


async def test_a_repeated_header_reads_as_all_its_values_not_the_first() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b"{}", "X-Key: right", "x-key: forged"))
        _, _, body = await answer_of(reader)
        assert json.loads(body)["key"] == "right, forged"  # a check reading one copy cannot be fooled
        writer.close()


async def test_unknown_paths_and_methods_and_http_1_0() -> None:
    before = refused("method_not_allowed"), refused("no_route")
    async with serving() as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("/hooks/x")).status_code == 405
        assert (await client.get("/hooks/x")).headers["Allow"] == "POST"
        assert (await client.post("/nowhere")).status_code == 404
        assert "did you mean" not in (await client.post("/nowhere")).json()["error"]
        # A sender's URL typed with a trailing slash or in another case: refused, with the path served.
        for slip in ("/hooks/x/", "/Hooks/X", "/hooks/x//"):
            missed = await client.post(slip)
            assert missed.status_code == 404 and missed.json()["error"].endswith("did you mean /hooks/x?"), missed.text
        assert (refused("method_not_allowed"), refused("no_route")) == (before[0] + 2, before[1] + 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /hooks/x HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        status, headers, _ = await answer_of(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await reader.read() == b""  # HTTP/1.0 without keep-alive: closed after the answer
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason", "counted_as"),
    [
        # Request smuggling: a length and chunking at once.
        (b"POST /hooks/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Content-Length", "malformed"),
        (b"POST /hooks/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}", 400, "malformed", "malformed"),
        (b"POST /hooks/x HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400, "malformed", "malformed"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed", "malformed"),
        (b"POST /hooks/x HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "exceeds", "head_too_large"),
        (b"POST /hooks/x HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431, "fields", "head_too_large"),
        (b"POST /hooks/x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}", 400, "upgrades", "upgrade"),
        # A coding llhttp passes over: the body reached the handler still compressed.
        (
            b"POST /hooks/x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            501,
            "not supported",
            "transfer_coding",
        ),
        (
            b"POST /hooks/x HTTP/1.1\r\nTransfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
            "not supported",
            "transfer_coding",
        ),
    ],
)
async def test_malformed_and_hostile_requests_are_refused_and_the_connection_closed(
    request_bytes: bytes, status: int, reason: str, counted_as: str
) -> None:
    before = refused(counted_as)
    calls: list[Request] = []

    async def handler(request: Request) -> Response:
        calls.append(request)
        return await echo(request)

    async with serving(handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes)
        got, headers, body = await answer_of(reader)
        assert (got, headers["connection"]) == (status, "close")
        assert reason in json.loads(body)["error"]
        assert refused(counted_as) == before + 1  # visible on /metrics, by reason
        await closed_by_server(reader)
        assert not calls  # nothing of it reached a handler
        writer.close()


async def test_a_malformed_body_fails_the_handlers_read_with_the_reason() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /hooks/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n")
        status, headers, body = await answer_of(reader)
        assert (status, headers["connection"]) == (400, "close")
        assert "malformed HTTP request" in json.loads(body)["error"]
        await closed_by_server(reader)
        writer.close()


async def test_an_answer_before_the_body_reaches_the_client_and_the_rest_is_not_a_request() -> None:
    async def refuse(request: Request) -> Response:
        return json_response({"error": "no"}, status=401)  # without reading the body

    async with serving(refuse) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b"POST /hooks/x HTTP/1.1\r\n\r\n" * 200_000  # 5 MB of body that looks like requests
        writer.write(post("/hooks/x", body)[: -len(body)])
        writer.write(body)
        drain = asyncio.create_task(writer.drain())
        status, headers, _ = await answer_of(reader)  # not a reset that destroys the answer
        assert (status, headers["connection"]) == (401, "close")
        assert await reader.read() == b""  # one answer: the body's bytes were never parsed as requests
        drain.cancel()
        writer.close()


async def test_expect_100_continue_is_sent_only_when_the_handler_reads() -> None:
    async def maybe(request: Request) -> Response:
        if request.headers.get("X-Key") != "ok":
            return json_response({"error": "no"}, status=401)
        return await echo(request)

    async with serving(maybe) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b"", "Expect: 100-continue", "X-Key: ok").replace(b"Content-Length: 0", b"Content-Length: 4"))
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b'"hi"')
        status, _, body = await answer_of(reader)
        assert status == 200 and json.loads(body)["body"] == '"hi"'
        writer.write(post("/hooks/x", b"", "Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: 4"))
        status, headers, _ = await answer_of(reader)  # refused at once: no 100, no body wanted
        assert (status, headers["connection"]) == (401, "close")
        writer.close()


async def test_a_body_nobody_reads_waits_in_tcp_not_in_memory() -> None:
    seen: list[Request] = []
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        seen.append(request)
        await release.wait()  # e.g. fetching a JWKS before looking at the body
        return await echo(request)

    async with serving(slow) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b"x" * 30_000_000))
        await asyncio.sleep(1.0)
        buffered = seen[0]._size
        assert buffered < _BODY_HIGH_WATER + 1024 * 1024, buffered  # 30 MB offered; reading paused near the mark
        release.set()
        status, _, _ = await answer_of(reader)
        assert status == 413  # then read on demand, up to the handler's limit
        writer.close()


async def test_a_body_cut_off_raises_connection_reset_in_the_handler() -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def reader_of_body(request: Request) -> Response:
        try:
            await request.read(1 << 20)
            outcome.set_result("read")
        except ConnectionResetError as exc:
            outcome.set_result(f"reset: {exc}")
        return json_response({})

    async with serving(reader_of_body) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b"x" * 1000)[:-500])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        assert (await asyncio.wait_for(outcome, 5)).startswith("reset: the client closed")


async def test_slow_heads_and_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async with serving(idle_timeout_s=1.0) as server:
        slowloris_reader, slowloris = await asyncio.open_connection("127.0.0.1", server.port)
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", server.port)
        idle.write(post("/hooks/x", b"{}"))
        assert (await answer_of(idle_reader))[0] == 200
        started = time.monotonic()
        slowloris.write(b"POST /hooks/x HTTP/1.1\r\n")
        for n in range(8):  # a header line every 0.3 s: never a whole head
            await asyncio.sleep(0.3)
            with contextlib.suppress(ConnectionError):
                slowloris.write(b"X-%d: 1\r\n" % n)
        await closed_by_server(slowloris_reader)
        await closed_by_server(idle_reader)
        assert time.monotonic() - started < 4
        slowloris.close()
        idle.close()


async def test_a_failing_handler_is_a_500_and_the_connection_goes_on() -> None:
    async def broken(request: Request) -> Response:
        if request.headers.get("X-Key") == "boom":
            raise RuntimeError("bug")
        return await echo(request)

    async with serving(broken) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/hooks/x", b"{}", "X-Key: boom"))
        assert (await answer_of(reader))[0] == 500
        writer.write(post("/hooks/x", b"{}"))
        assert (await answer_of(reader))[0] == 200
        writer.close()


async def test_stopping_finishes_requests_in_progress_and_refuses_new_ones() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await release.wait()
        return await echo(request)

    server = WebServer("127.0.0.1", 0, drain_timeout=10)
    server.add_route("POST", "/hooks/x", slow)
    await server.start()
    busy_reader, busy = await asyncio.open_connection("127.0.0.1", server.port)
    other_reader, other = await asyncio.open_connection("127.0.0.1", server.port)
    busy.write(post("/hooks/x", b'"kept"'))
    await started.wait()
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.2)
    other.write(post("/hooks/x", b"{}"))
    status, headers, _ = await answer_of(other_reader)
    assert (status, headers["retry-after"], headers["connection"]) == (503, "5", "close")
    assert not stopping.done()  # still waiting for the request in progress
    release.set()
    status, _, body = await answer_of(busy_reader)
    assert status == 200 and json.loads(body)["body"] == '"kept"'
    await asyncio.wait_for(stopping, 5)
    assert await busy_reader.read() == b""
    busy.close()
    other.close()


async def test_a_handler_outliving_the_drain_is_cancelled_and_said(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hung(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    server = WebServer("127.0.0.1", 0, drain_timeout=0.5)
    server.add_route("POST", "/hooks/x", hung)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/hooks/x", b"{}"))
    await started.wait()
    await asyncio.wait_for(server.stop(), 5)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert "1 request(s) still in progress" in caplog.text
    await closed_by_server(reader)
    writer.close()
