"""The deliveries' HTTP/1.1 client (adapters/http/wire.py) against real local servers: aiohttp's for
the ordinary answers, and hand-written ones for what a target may do at the edges (chunks, an
answer that ends with the connection, compressed answers, silence, connections closed under it)."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from yarl import URL

from adapters.http.config import HttpOutboundConfig
from adapters.http.outbound import HttpOutbound
from adapters.http.wire import WireClient, WireError
from bus.adapter_api import Context, Event, PermanentError
from examples.kit.standin import serve
from tests.support.tcp import Handler, tcp_server


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[URL]:
    """A TCP server running ``handler`` per connection; yields its URL."""
    async with tcp_server(handler) as port:
        yield URL(f"http://127.0.0.1:{port}/in")


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def aiohttp_server() -> AsyncIterator[tuple[URL, list[web.Request]]]:
    seen: list[web.Request] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request)
        body = await request.read()
        if request.path == "/chunked":
            response = web.StreamResponse(status=200)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b"one,", b"two,", b"three"):
                await response.write(part)
            await response.write_eof()
            return response  # type: ignore[return-value]
        return web.json_response(
            {"got": body.decode(), "idem": request.headers.get("Idempotency-Key")}, status=201, headers={"X-Seen": "yes"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner, port = await serve(app)
    try:
        yield URL(f"http://127.0.0.1:{port}/in"), seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[WireClient]:
    made = WireClient(connect_timeout=2, read_timeout=0.5)
    yield made
    await made.close()


async def test_answers_are_read_whole_over_one_kept_alive_connection(client: WireClient) -> None:
    async with aiohttp_server() as (url, seen):
        for i in range(5):
            answer = await client.request("POST", url, {"Content-Type": "application/json", "Idempotency-Key": f"e{i}"}, b'{"n": %d}' % i)
            assert answer.status == 201
            assert answer.body == b'{"got": "{\\"n\\": %d}", "idem": "e%d"}' % (i, i)
            assert answer.headers["x-seen"] == "yes"  # names in any case
        assert client.connections_made == 1
        assert [r.method for r in seen] == ["POST"] * 5
        chunked = await client.request("PUT", url.with_path("/chunked"), {}, b"x")
        assert (chunked.status, chunked.body) == (200, b"one,two,three")
        assert client.connections_made == 1


async def test_an_answer_without_length_ends_with_the_connection(client: WireClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with raw_server(handler) as url:
        answer = await client.request("POST", url, {}, b"{}")
        again = await client.request("POST", url, {}, b"{}")
    assert answer.body == again.body == b"all of it"
    assert client.connections_made == 2  # never reused: its end was the answer's end


async def test_a_compressed_answer_and_an_interim_one_are_read_as_the_target_meant(client: WireClient) -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed))
            await writer.drain()

    async with raw_server(handler) as url:
        answer = await client.request("POST", url, {}, b"{}")
    assert (answer.status, answer.body) == (202, b'{"ok": true}')


async def test_a_target_that_answers_twice_keeps_its_first_answer_and_loses_the_connection(client: WireClient) -> None:
    """A second answer in the same bytes as the first (a buggy target, or one answering ahead) was
    parsed into the first, already complete: its status replaced the first's (a 103, so the
    delivery was dead-lettered "answered 103"), its headers were added and its body appended."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Id: 1\r\n\r\nok"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nX-Id: 2\r\n\r\nfail"
            )
            await writer.drain()

    async with raw_server(handler) as url:
        for _ in range(2):
            answer = await client.request("POST", url, {}, b"{}")
            assert (answer.status, answer.body, answer.headers.getall("X-Id")) == (201, b"ok", ["1"])
    assert client.connections_made == 2  # what followed was never asked for: the connection is not reused


async def test_an_answer_whose_lines_end_with_a_bare_lf_is_read_and_an_ambiguous_one_is_not(client: WireClient) -> None:
    """Older and hand-written servers end lines with LF alone (RFC 9112 2.2 lets a recipient take
    it, as curl does): such a target used to be retried for a day, then dead-lettered, "not
    HTTP/1.1". Two differing Content-Lengths stay an error: which one is the answer?"""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\nContent-Length: 2\nX-Id: 7\n\nok")
        await read_request(reader)  # and the connection is kept for the next one
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\nok!")
        await writer.drain()

    async with raw_server(handler) as url:
        answer = await client.request("POST", url, {}, b"{}")
        assert (answer.status, answer.body, answer.headers["X-Id"]) == (201, b"ok", "7")
        with pytest.raises(WireError, match="Content-Length"):
            await client.request("POST", url, {}, b"{}")
    assert client.connections_made == 1


async def test_a_silent_target_times_out_and_its_connection_is_not_reused(client: WireClient) -> None:
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        if answered == 0:
            answered += 1
            await asyncio.sleep(5)  # says nothing on the first connection
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await read_request(reader)

    async with raw_server(handler) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.request("POST", url, {}, b"{}")
        assert loop.time() - started < 2
        answer = await client.request("POST", url, {}, b"{}")  # a late answer on the old one is never taken for this
        assert answer.status == 204
        assert client.connections_made == 2


async def test_the_read_timeout_counts_from_the_last_bytes_on_a_kept_connection(client: WireClient) -> None:
    """An answer that trickles in (each piece within the read timeout) is read whole, however long
    it takes; silence on a reused connection times out one read timeout after the request."""
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            await read_request(reader)
            requests += 1
            if requests == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                for piece in b"slow!":  # 1.5 s in all, 0.3 s apart: past the 0.5 s read timeout as a whole
                    await asyncio.sleep(0.3)
                    writer.write(bytes([piece]))
                    await writer.drain()
            elif requests == 2:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
            # the third: silence

    async with raw_server(handler) as url:
        assert (await client.request("POST", url, {}, b"{}")).body == b"slow!"
        assert (await client.request("POST", url, {}, b"{}")).status == 204
        await asyncio.sleep(0.3)  # the connection's timer was armed by the first request: it must not cut the third short or late
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.request("POST", url, {}, b"{}")
        assert 0.45 <= loop.time() - started < 1.5
        assert client.connections_made == 1


async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A target that answers a byte every 0.2 s: each within any read timeout, the whole never."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    for _ in range(1_000_000):
        await asyncio.sleep(0.2)
        writer.write(b".")
        await writer.drain()


async def test_an_answer_that_comes_a_byte_at_a_time_ends_at_the_whole_answers_budget() -> None:
    """Each byte within the read timeout: no read timeout ever fired, and a target (a broken proxy,
    or one that means it) could hold a delivery, and its key's later events, without end."""

    client = WireClient(connect_timeout=2, read_timeout=0.5, answer_within=1.5)
    try:
        async with raw_server(dripping) as url:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError, match=r"the answer did not end within 1.5s \(its bytes came slowly\)"):
                await client.request("POST", url, {}, b"{}")
            assert 1.4 <= loop.time() - started < 3
    finally:
        await client.close()
    # The http outbound gives its client a budget of six times timeout_s, at least 60 s.
    config = HttpOutboundConfig.model_validate({"name": "t", "type": "http", "url": "http://127.0.0.1:1/", "timeout_s": 20})
    outbound = HttpOutbound(config, Context("t", logging.getLogger("test")))
    await outbound.start()
    try:
        assert outbound._client is not None and outbound._client._answer_within == 120.0
    finally:
        await outbound.stop()


async def test_the_polls_end_a_slow_answer_at_the_whole_answers_budget() -> None:
    """``http_poll`` and ``graphql_poll`` (httpx) had timeouts per read only, as the SOAP adapters'
    aiohttp sessions had (now given ``answer_budget`` as their total): the same byte-at-a-time
    answer held a poll, and with it the inbound, without end."""
    import httpx

    from adapters.http.bounded import AnswerTooSlow, answer_budget, read_bounded

    assert (answer_budget(5), answer_budget(30)) == (60.0, 180.0)

    async with raw_server(dripping) as url:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=0.5) as client:
            started = loop.time()
            with pytest.raises(AnswerTooSlow, match=r"the answer did not end within 1.5s") as raised:
                await read_bounded(client, "GET", str(url), limit=1 << 20, within=1.5)
            assert isinstance(raised.value, httpx.TimeoutException)  # what the polls catch and retry
            assert 1.4 <= loop.time() - started < 3


def closes_on_second_request() -> Handler:
    """Answers the first request of every connection, then closes it on the second without answering."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # then silence, and the connection closed

    return handler


async def test_a_connection_closed_as_a_request_is_sent_is_tried_again_only_for_idempotent_methods(client: WireClient) -> None:
    async with raw_server(closes_on_second_request()) as url:
        assert (await client.request("PUT", url, {}, b"{}")).body == b"ok"
        assert (await client.request("PUT", url, {}, b"{}")).body == b"ok"  # failed on the kept one, sent again on a new one
        assert client.connections_made == 2
        with pytest.raises(WireError, match="closed the connection"):
            await client.request("POST", url, {}, b"{}")  # a POST may have been taken: the caller decides (Idempotency-Key)
        assert (await client.request("POST", url, {}, b"{}")).body == b"ok"  # and its next call goes on a new connection
        assert client.connections_made == 3


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Bad": "a\r\nInjected: yes"}, "line break"),
        ({"X-Bad": "a\x00b"}, "line break or NUL"),
        ({"Bad Name": "a"}, "not a valid header name"),
        ({"X-Text": "emoji 😀"}, "cannot carry"),
    ],
)
async def test_a_request_that_would_split_or_cannot_be_sent_is_refused_before_anything_is_sent(
    client: WireClient, headers: dict[str, str], reason: str
) -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1

    async with raw_server(handler) as url:
        with pytest.raises(ValueError, match=reason):
            await client.request("POST", url, headers, b"{}")
        with pytest.raises(ValueError, match="only http and https"):
            await client.request("POST", URL("ftp://127.0.0.1/x"), {}, b"")
        await asyncio.sleep(0.05)
    assert requests == 0 and client.connections_made == 0


async def test_garbage_and_a_refused_connection_are_connection_errors(client: WireClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as url:
        with pytest.raises(WireError, match="not HTTP"):
            await client.request("POST", url, {}, b"{}")
    with pytest.raises(OSError):
        await client.request("POST", url, {}, b"{}")  # the server is gone: refused


async def test_an_answer_without_end_or_a_compression_bomb_is_cut_at_the_limit() -> None:
    """A target answering far more than anyone reads: the client stops at its limit with the
    reason, keeps none of the rest in memory, and does not reuse the connection."""
    client = WireClient(connect_timeout=2, read_timeout=2, max_answer_bytes=100_000)
    bomb = gzip.compress(b"0" * 5_000_000)  # 5 MB from about 5 KB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/endless" in request:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(1000):  # 64 MB, never all read
                    writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                    await writer.drain()
            elif b"/bomb" in request:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"y" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    try:
        async with raw_server(handler) as url:
            with pytest.raises(WireError, match="over 100000 bytes; it was not read"):
                await client.request("POST", url.with_path("/endless"), {}, b"{}")
            with pytest.raises(WireError, match="gzip answer decodes to over 100000 bytes"):
                await client.request("POST", url.with_path("/bomb"), {}, b"{}")
            with pytest.raises(WireError, match="head over 65536 bytes"):
                await client.request("POST", url.with_path("/head"), {}, b"{}")
            assert client.connections_made == 3  # none of the three connections was reused
    finally:
        await client.close()


async def test_a_connection_idle_past_the_keepalive_is_not_reused() -> None:
    client = WireClient(keepalive=0.2)
    try:
        async with aiohttp_server() as (url, _):
            await client.request("POST", url, {}, b"{}")
            await client.request("POST", url, {}, b"{}")
            assert client.connections_made == 1
            await asyncio.sleep(0.3)
            await client.request("POST", url, {}, b"{}")
            assert client.connections_made == 2
    finally:
        await client.close()


async def test_the_request_names_its_host_and_length_and_a_configured_host_wins(client: WireClient) -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await read_request(reader))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with raw_server(handler) as url:
        await client.request("POST", url.with_query(a="b c"), {"X-One": "1", "Content-Length": "999"}, b"{}")
        await client.request("DELETE", url, {"host": "api.example.com"})
    first, second = heads
    assert first.startswith(f"POST /in?a=b+c HTTP/1.1\r\nHost: 127.0.0.1:{url.port}\r\n".encode())
    assert b"Content-Length: 2\r\n" in first and b"Content-Length: 999" not in first and b"X-One: 1\r\n" in first
    assert first.endswith(b"\r\n\r\n{}")
    assert second.startswith(b"DELETE /in HTTP/1.1\r\nHost: api.example.com\r\n") and b"Content-Length" not in second


async def test_an_event_whose_header_renders_a_line_break_is_refused_by_the_adapter_with_the_reason() -> None:
    async with aiohttp_server() as (url, seen):
        config = HttpOutboundConfig.model_validate(
            {"name": "crm", "type": "http", "url": str(url), "headers": {"X-Customer": "${customer_id}"}}
        )
        adapter = HttpOutbound(config, Context("crm", logging.getLogger("test")))
        await adapter.start()
        try:
            await adapter.deliver(Event(schema="Payment", data={"customer_id": "cus_1"}, source="/t"))
            with pytest.raises(PermanentError, match="X-Customer holds a line break"):
                await adapter.deliver(Event(schema="Payment", data={"customer_id": "cus_1\r\nX-Admin: yes"}, source="/t"))
        finally:
            await adapter.stop()
        assert [r.headers["X-Customer"] for r in seen] == ["cus_1"]  # the bad one never reached the target


async def test_a_redirect_is_not_followed_and_its_dead_letter_says_where_it_points() -> None:
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://erp.example.com/v2/in\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the hub hangs up: no second request comes

    async with raw_server(handler) as url:
        adapter = HttpOutbound(
            HttpOutboundConfig.model_validate({"name": "erp", "type": "http", "url": str(url)}), Context("erp", logging.getLogger("t"))
        )
        await adapter.start()
        try:
            with pytest.raises(PermanentError, match=r"answered 308 to https://erp\.example\.com/v2/in: redirects are not followed"):
                await adapter.deliver(Event(schema="Payment", data={"payment_id": "p1"}, source="/t"))
        finally:
            await adapter.stop()
    assert len(requests) == 1


async def test_a_nan_or_an_infinity_is_refused_naming_its_field_and_never_sent() -> None:
    """JSON has no NaN: written as the bare word, a target's parser refused it with a 400 that
    named nothing. The event is dead-lettered naming the field instead, and never sent."""
    async with aiohttp_server() as (url, seen):
        config = HttpOutboundConfig.model_validate({"name": "metrics", "type": "http", "url": str(url)})
        adapter = HttpOutbound(config, Context("metrics", logging.getLogger("test")))
        await adapter.start()
        try:
            await adapter.deliver(Event(schema="UsageMetric", data={"value": 1.5, "tags": [0.25]}, source="/t"))
            with pytest.raises(PermanentError, match=r"the body's value is not a number JSON can carry"):
                await adapter.deliver(Event(schema="UsageMetric", data={"value": float("nan")}, source="/t"))
            with pytest.raises(PermanentError, match=r"the body's tags\[1\] is not a number JSON can carry"):
                await adapter.deliver(Event(schema="UsageMetric", data={"value": 1.0, "tags": [1.0, float("-inf")]}, source="/t"))
        finally:
            await adapter.stop()
        assert len(seen) == 1  # only the first


async def test_a_target_whose_answer_gives_a_key_twice_is_judged_by_the_last_value_and_not_asked_again() -> None:
    """A 200 whose JSON gives a key twice (an API's serializer bug) was "no JSON to judge
    refused_when by": the delivery the target had taken was retried, and sent again, until it was
    dead-lettered. What a configured system answers is read as its other clients read it."""
    answers = [b'{"ok": false, "ok": true}', b'{"ok": true, "ok": false}']
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            requests.append(await read_request(reader))
            body = answers.pop(0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async with raw_server(handler) as url:
        config = HttpOutboundConfig.model_validate({"name": "erp", "type": "http", "url": str(url), "refused_when": "$answer.ok == false"})
        adapter = HttpOutbound(config, Context("erp", logging.getLogger("test")))
        await adapter.start()
        try:
            await adapter.deliver(Event(schema="Payment", data={"payment_id": "pi_1"}, source="/t"))  # delivered: the last ok is true
            with pytest.raises(PermanentError, match="refused"):  # refused by the last value, not retried as "no JSON"
                await adapter.deliver(Event(schema="Payment", data={"payment_id": "pi_2"}, source="/t"))
        finally:
            await adapter.stop()
    assert len(requests) == 2
