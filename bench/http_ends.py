"""The two HTTP ends of the headline path, alone: what aiohttp costs per request against the bare
HTTP/1.1 the baseline pipeline speaks (bench/loadgen.py), as a client (the delivery's call) and as
a server (the webhook's answer), in CPU-us per request of the side measured.

    .venv/bin/python bench/http_ends.py [--requests 4000] [--rounds 3]

Each side is measured in this process while its peer runs in a process of its own (not counted):

- client: sequential POSTs of a delivery's JSON body and CloudEvents headers to a bare target
  answering 204, with aiohttp (a ClientSession as ``HttpOutbound`` made it), with the client
  deliveries use now (adapters/http/wire.py) and with the bare sender;
- server: sequential POSTs of a webhook body from a bare sender, answered 202 with a JSON body
  by an aiohttp application (the body read, parsed, answered with ``web.json_response`` as the
  webhook did), by the hub's own webhook server (bus/runtime/web.py, the same handler) and by
  the bare protocol (parsed, answered with a prebuilt 202).

Rounds interleave the cases; the ratio aiohttp / bare is per round. This bounds what a lighter
HTTP layer could take off the headline (bench/latency.py) at each end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from yarl import URL

from bench.common import write
from bench.loadgen import TARGET_COMMAND, RawSender, RequestProtocol
from bus.ports import free_port
from bus.runtime.http1 import Request, Response, json_response
from bus.runtime.web import WebServer

ROOT = str(Path(__file__).resolve().parents[1])
DELIVERY = json.dumps({"payment_id": "pi_1", "amount": 1234, "currency": "usd", "status": "succeeded"}).encode()
WEBHOOK = json.dumps({"id": "evt-1", "data": {"id": "pi_1", "amount": 1234, "currency": "usd", "status": "succeeded"}}).encode()
HEADERS = {
    "Content-Type": "application/json",
    "Idempotency-Key": "evt-1",
    "ce-specversion": "1.0",
    "ce-id": "evt-1",
    "ce-source": "/inbound/payments",
    "ce-type": "Payment",
    "ce-time": "2026-12-04T13:05:18.123Z",
    "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
}
RAW_HEADERS = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in HEADERS.items() if k != "Content-Type")

SENDER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from bench.loadgen import RawSender
async def main():
    port, n, body = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
    sender = RawSender("127.0.0.1", port, "/hooks/payments")
    for _ in range(n):
        status, _ = await sender.post(body)
        assert status == 202, status
    await sender.close()
asyncio.run(main())
"""


async def per_request(call: Callable[[], Awaitable[None]], n: int) -> float:
    for _ in range(200):  # warm: connections, code paths
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n * 1e6


async def client_aiohttp(url: str, n: int) -> float:
    connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def call() -> None:
            async with session.request("POST", url, data=DELIVERY, headers=HEADERS, allow_redirects=False) as answer:
                await answer.read()

        return await per_request(call, n)


async def client_wire(url: str, n: int) -> float:
    from adapters.http.wire import WireClient

    client = WireClient(limit=64, connect_timeout=10, read_timeout=10)
    target = URL(url)

    async def call() -> None:
        await client.request("POST", target, HEADERS, DELIVERY)

    try:
        return await per_request(call, n)
    finally:
        await client.close()


async def client_bare(port: int, n: int) -> float:
    sender = RawSender("127.0.0.1", port, "/in")

    async def call() -> None:
        await sender.post(DELIVERY, RAW_HEADERS)

    try:
        return await per_request(call, n)
    finally:
        await sender.close()


async def serve_and_count(start: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]], n: int) -> float:
    """CPU of this process while a sender process posts ``n`` webhooks (after 200 to warm up)."""
    port = free_port()
    stop = await start(port)
    try:
        for count, measured in ((200, False), (n, True)):
            before = time.process_time()
            sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, ROOT, str(port), str(count), WEBHOOK.decode())
            if await sender.wait() != 0:
                raise RuntimeError("the sender failed")
            if measured:
                return (time.process_time() - before) / n * 1e6
        raise AssertionError("unreachable")
    finally:
        await stop()


async def server_aiohttp(port: int) -> Callable[[], Awaitable[None]]:
    async def hook(request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        return web.json_response({"id": document["id"]}, status=202)

    app = web.Application()
    app.router.add_post("/hooks/payments", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner.cleanup


async def server_hub(port: int) -> Callable[[], Awaitable[None]]:
    """The hub's own webhook server (bus/runtime/web.py on http1.py), with a handler doing what
    the aiohttp one does: read the body, parse it, answer 202 with JSON."""

    async def hook(request: Request) -> Response:
        body = await request.read(1 << 20)
        assert body is not None
        return json_response({"id": json.loads(body)["id"]}, status=202)

    server = WebServer("127.0.0.1", port)
    server.add_route("POST", "/hooks/payments", hook)
    await server.start()
    return server.stop


class _Bare(RequestProtocol):
    def request(self, head: bytes, body: bytes) -> None:
        answer = json.dumps({"id": json.loads(body)["id"]}).encode()
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )


async def server_bare(port: int) -> Callable[[], Awaitable[None]]:
    server = await asyncio.get_running_loop().create_server(_Bare, "127.0.0.1", port)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop


async def main(requests: int, rounds: int) -> dict[str, Any]:
    target = await asyncio.create_subprocess_exec(*TARGET_COMMAND, stdout=asyncio.subprocess.PIPE)
    assert target.stdout is not None
    port = int(await target.stdout.readline())
    runs: dict[str, list[float]] = {
        "client aiohttp": [],
        "client wire": [],
        "client bare": [],
        "server aiohttp": [],
        "server hub": [],
        "server bare": [],
    }
    try:
        for n in range(rounds):
            runs["client bare"].append(await client_bare(port, requests))
            runs["client aiohttp"].append(await client_aiohttp(f"http://127.0.0.1:{port}/in", requests))
            runs["client wire"].append(await client_wire(f"http://127.0.0.1:{port}/in", requests))
            runs["server bare"].append(await serve_and_count(server_bare, requests))
            runs["server aiohttp"].append(await serve_and_count(server_aiohttp, requests))
            runs["server hub"].append(await serve_and_count(server_hub, requests))
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.1f} us" for k, v in runs.items()), flush=True)
    finally:
        target.kill()
        await target.wait()
    ratios = {end: [a / b for a, b in zip(runs[f"{end} aiohttp"], runs[f"{end} bare"], strict=True)] for end in ("client", "server")}
    ratios["client wire"] = [w / b for w, b in zip(runs["client wire"], runs["client bare"], strict=True)]
    ratios["server hub"] = [h / b for h, b in zip(runs["server hub"], runs["server bare"], strict=True)]
    for case, what in (("client wire", "adapters/http/wire.py"), ("server hub", "bus/runtime/web.py")):
        shown = ", ".join(f"{r:.2f}" for r in ratios[case])
        print(f"{case} ({what}) / bare per round {shown} (median {statistics.median(ratios[case]):.2f})")
    for end in ("client", "server"):
        values = ratios[end]
        print(
            f"{end}: aiohttp {statistics.median(runs[f'{end} aiohttp']):.1f} us, bare {statistics.median(runs[f'{end} bare']):.1f} us "
            f"per request; aiohttp / bare per round {', '.join(f'{r:.2f}' for r in values)} (median {statistics.median(values):.2f})"
        )
    body = {"requests": requests, "rounds": rounds, "cpu_us_per_request": runs, "ratio_aiohttp_to_bare": ratios}
    write("http_ends", body)
    return body


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds))
