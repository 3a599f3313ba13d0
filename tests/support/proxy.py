"""A TCP proxy the test controls, to cut the hub off from Kafka without restarting the broker
(the embedded broker keeps nothing across a restart, docs/embedded-broker.md)."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted and piped
        self.stale_used = 0  # stale connections a client wrote on, and was reset
        self._stale: set[asyncio.StreamWriter] = set()  # the connections go_stale forgot

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def sever(self) -> None:
        """Drop every open connection; new ones are closed at once while ``cut`` is set."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def go_stale(self) -> None:
        """Forget every open connection without a word, as a NAT or firewall does with one left idle:
        neither end hears of it until the client writes on it, which is answered with a reset. New
        connections are served as before."""
        self._stale.update(self._writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._relay(reader, writer)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b"", gate: asyncio.Event | None = None
    ) -> None:
        """Pipe a client's connection to the upstream both ways until either end closes: ``first``
        (what was read of it already) goes ahead, and data waits while ``gate`` is clear."""
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, data: bytes = b"") -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data or (data := await src.read(65536)):
                    if gate is not None:
                        await gate.wait()
                    if self.cut:
                        break
                    if writer in self._stale:
                        if src is reader:  # the client wrote on it: answered with a reset
                            self.stale_used += 1
                            writer.transport.abort()
                        break
                    dst.write(data)
                    await dst.drain()
                    data = b""
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, first), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
        self._stale.difference_update((writer, up_writer))


class KafkaProxy(TcpProxy):
    """A TCP proxy in front of a Kafka broker that can cut off the clients of one process only,
    told apart by the client id of each connection's first request (``kafka.client_id``).

    Their connections go silent, as over a network partition: nothing is closed, and what either
    side sends is held (as TCP would keep resending it) until ``heal``, when it goes through; new
    connections from them are held the same way once their first request names them."""

    def __init__(self, listen_port: int, upstream_port: int) -> None:
        super().__init__(listen_port, upstream_port)
        self._open: dict[str, asyncio.Event] = {}  # per client id: set while its data goes through
        self.client_ids: list[str] = []  # of every connection, in the order they came

    def _gate(self, client_id: str) -> asyncio.Event:
        gate = self._open.get(client_id)
        if gate is None:
            gate = self._open[client_id] = asyncio.Event()
            gate.set()
        return gate

    def silence(self, client_id: str) -> None:
        self._gate(client_id).clear()

    def heal(self, client_id: str) -> None:
        self._gate(client_id).set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = await reader.readexactly(4)
            first = await reader.readexactly(int.from_bytes(size, "big"))
        except (OSError, asyncio.IncompleteReadError):
            writer.transport.abort()
            return
        # A request header: api key (2), version (2), correlation id (4), then the client id as a
        # nullable string (a length of 2 bytes), in every header version.
        length = int.from_bytes(first[8:10], "big", signed=True)
        client_id = first[10 : 10 + length].decode() if length > 0 else ""
        self.client_ids.append(client_id)
        await self._relay(reader, writer, size + first, self._gate(client_id))
