"""A lean HTTP/1.1 load generator and receiving target for the latency benchmark.

On this 2-core machine the sender and the target share the CPU with the hub and its broker. With
aiohttp on both ends they took about 60 % of one core at 1,000 requests/s (more than the hub
itself), so the benchmark measured its own queueing as much as the hub's. These two speak just
enough HTTP/1.1 for the job (keep-alive, Content-Length bodies, no chunking), the way wrk does in
C: requests are pre-built bytes, answers are parsed only for their status and length.
"""

from __future__ import annotations

__all__ = ["TARGET_COMMAND", "RawSender", "RawTarget", "RequestProtocol", "content_length"]

import asyncio
import sys
import time


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked bodies are not supported by the bench target")
    return 0


class RawSender:
    """POSTs JSON bodies over a pool of keep-alive connections; one request per connection at a time."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self._prefix = b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n" % (path.encode(), host.encode(), port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def post(self, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        """``headers``: extra header lines, each ending in CRLF."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
        writer.write(b"%s%sContent-Length: %d\r\n\r\n%s" % (self._prefix, headers, len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = content_length(head)
        answer = await reader.readexactly(length) if length else b""
        self._idle.append((reader, writer))
        return int(head[9:12]), answer

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


class RequestProtocol(asyncio.Protocol):
    """Server side of the same minimal HTTP/1.1: splits the byte stream into requests (Content-Length
    bodies) and hands each to ``request``; ``answer`` writes a bodiless response."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            total = end + 4 + content_length(head)
            if len(self.buffer) < total:
                return
            body, self.buffer = self.buffer[end + 4 : total], self.buffer[total:]
            self.request(head, body)

    def request(self, head: bytes, body: bytes) -> None:
        raise NotImplementedError

    def answer(self, status: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            length = b"" if status.startswith(b"204") else b"Content-Length: 0\r\n"  # a 204 carries no length
            self.transport.write(b"HTTP/1.1 %s\r\n%s\r\n" % (status, length))


class _Receiver(RequestProtocol):
    def __init__(self, target: RawTarget) -> None:
        super().__init__()
        self.target = target

    def request(self, head: bytes, body: bytes) -> None:
        self.target.received(head)
        self.answer(b"204 No Content")


class RawTarget:
    """Answers every request 204 and records when each Idempotency-Key first arrived."""

    def __init__(self, header: bytes = b"idempotency-key") -> None:
        self.header = header
        self.arrived: dict[str, float] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    def received(self, head: bytes) -> None:
        now = time.perf_counter()
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == self.header:
                self.arrived.setdefault(value.strip().decode(), now)
                return

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Receiver(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _serve_forever() -> None:
    target = RawTarget()
    await target.start()
    print(target.port, flush=True)
    await asyncio.Event().wait()


# A RawTarget in a process of its own, which prints its port and answers until killed: for a
# bench that measures only its own process (the peer's CPU is not the measured side's).
TARGET_COMMAND = [sys.executable, __file__]

if __name__ == "__main__":
    asyncio.run(_serve_forever())
