"""A broker's security layer in front of the embedded broker: TLS (optionally requiring a client
certificate from a CA) and SASL (PLAIN, or OAUTHBEARER with a JWT checked against a key), then
the plain Kafka protocol passed through to Tansu.

The embedded broker cannot check either itself here (docs/embedded-broker.md: Tansu 0.6.0's
`--cert` and `--key` refuse to be used together, and `--authentication` has no way to create its
first user on the in-memory store); the librdkafka mock has no SASL or TLS. So the hub's clients
(aiokafka, with the config's `kafka.security`) do a real TLS handshake and a real SASL exchange
against this gateway, which answers SaslHandshake and SaslAuthenticate the way a Kafka broker does
(KIP-43, KIP-152; OAUTHBEARER per RFC 7628 and KIP-255) and refuses anything else before login.
"""

from __future__ import annotations

__all__ = ["KafkaGateway"]

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


class KafkaGateway:
    """Listens on ``port``; every connection must pass TLS (when ``tls`` is given) and then, when
    ``mechanisms`` is set, a SASL login that ``check(mechanism, payload)`` accepts (it returns
    None, or why not). ``logins`` and ``refusals`` record what happened, for the tests."""

    def __init__(
        self,
        port: int,
        upstream_port: int,
        *,
        tls: ssl.SSLContext | None = None,
        mechanisms: tuple[str, ...] = (),
        check: Callable[[str, bytes], str | None] | None = None,
    ) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self._tls = tls
        self._mechanisms = mechanisms
        self._check = check
        self.logins: list[str] = []
        self.refusals: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> KafkaGateway:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._tls)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            try:
                if not self._mechanisms or await self._login(reader, writer, up_reader, up_writer):
                    await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.close()

    async def _login(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> bool:
        mechanism: str | None = None
        while True:
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            frame = await reader.readexactly(size)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            client_len = struct.unpack(">h", frame[8:10])[0]
            body = frame[10 + max(client_len, 0) :]
            if api_key == API_VERSIONS:  # before login, as brokers allow: the broker itself answers
                up_writer.write(struct.pack(">i", size) + frame)
                await up_writer.drain()
                answer_size = struct.unpack(">i", await up_reader.readexactly(4))[0]
                writer.write(struct.pack(">i", answer_size) + await up_reader.readexactly(answer_size))
            elif api_key == SASL_HANDSHAKE:
                asked = body[2 : 2 + struct.unpack(">h", body[:2])[0]].decode()
                error = 0 if asked in self._mechanisms else UNSUPPORTED_SASL_MECHANISM
                mechanism = asked if error == 0 else None
                listed = struct.pack(">i", len(self._mechanisms)) + b"".join(_string(m) for m in self._mechanisms)
                self._answer(writer, correlation, struct.pack(">h", error) + listed)
                if error:
                    self.refusals.append(f"mechanism {asked} not enabled")
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism is not None:
                payload = body[4 : 4 + struct.unpack(">i", body[:4])[0]]
                why = self._check(mechanism, payload) if self._check else None
                # v1 adds the session's lifetime (0: no re-authentication asked, KIP-368).
                lifetime = struct.pack(">q", 0) if version >= 1 else b""
                if why is None:
                    self.logins.append(mechanism)
                    self._answer(writer, correlation, struct.pack(">h", 0) + _string(None) + struct.pack(">i", 0) + lifetime)
                    await writer.drain()
                    return True
                self.refusals.append(why)
                failed = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(why) + struct.pack(">i", 0) + lifetime
                self._answer(writer, correlation, failed)
                await writer.drain()
                return False
            else:  # anything else before login: a broker closes the connection (ILLEGAL_SASL_STATE)
                self.refusals.append(f"request {api_key} before login")
                return False
            await writer.drain()

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, correlation: int, body: bytes) -> None:
        message = struct.pack(">i", correlation) + body
        writer.write(struct.pack(">i", len(message)) + message)
