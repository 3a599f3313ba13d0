"""Reaching a RabbitMQ broker, for the ``amqp`` inbound and outbound alike.

A url may name the several nodes of a cluster, comma-separated, as NATS and libpq URLs do:
``amqp://hub:secret@rabbit-0:5672,rabbit-1:5672,rabbit-2/erp``. A start connects to the first node
that answers; after a connection is lost, or an attempt to reconnect fails, the next attempt goes
to the next node, so a hub follows its queues to the nodes that are up (a quorum queue is served
by any node of its cluster).
"""

from __future__ import annotations

__all__ = ["ServersConnection", "broker_servers", "connect", "exists"]

import contextlib
import re
import ssl
from typing import Any, Literal

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from yarl import URL

from bus.adapter_api import ClientTls, RetryableError

# scheme://[user[:password]@]host[:port][,host[:port]...][/vhost][?query]; a password holds no
# "/" or "?" unencoded (RFC 3986), so the servers are what follows the last "@" before them.
_SERVERS = re.compile(r"(?P<user>[^/?]*@)?(?P<hosts>[^/?@]*)(?P<tail>[/?].*)?", re.S)


def broker_servers(url: str) -> list[URL]:
    """One URL per node that ``url`` names (one for a plain URL); ValueError saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("amqp", "amqps"):
        raise ValueError("an AMQP url starts with amqp:// (or amqps:// for TLS)")
    found = _SERVERS.fullmatch(rest)
    hosts = found["hosts"].split(",") if found else []
    if not found or not all(h.strip() for h in hosts):
        raise ValueError("the url names no broker host (amqp://user:password@host:5672/vhost; several: host-a:5672,host-b:5672)")
    servers = []
    for host in hosts:
        try:
            server = URL(f"{scheme}://{found['user'] or ''}{host.strip()}{found['tail'] or ''}")
            server.port  # noqa: B018 - read to check it: yarl parses a port lazily
        except ValueError as exc:
            raise ValueError(f"broker {host.strip()!r}: {exc}") from None
        servers.append(server)
    return servers


# ServersConnection turns to the next node before each attempt after the first, by wrapping the
# method every attempt of aio-pika's robust connection goes through (private: checked when a
# connection is made, so that an aio-pika that renamed it fails the start rather than never turning).
_ATTEMPT = "_RobustConnection__connect_transport"


class ServersConnection(RobustConnection):
    """A robust connection over the nodes ``broker_servers`` found, starting at ``first``: its
    ``url`` is the node it connects to now, and each attempt after the first goes to the next."""

    def __init__(self, servers: list[URL], first: int = 0, **kwargs: Any) -> None:
        if not hasattr(RobustConnection, _ATTEMPT):
            raise RuntimeError(f"aio-pika's RobustConnection has no {_ATTEMPT}: adapters/amqp/connection.py needs updating")
        self._servers, self._turn, self._tried = list(servers), first, False
        super().__init__(servers[first], **kwargs)

    @property
    def url(self) -> URL:
        return self._servers[self._turn]

    @url.setter
    def url(self, value: URL | str) -> None:  # aio-pika's __init__, and update_secret
        self._servers[self._turn] = URL(value)

    async def _RobustConnection__connect_transport(self) -> None:
        if self._tried:
            self._turn = (self._turn + 1) % len(self._servers)
        self._tried = True
        await getattr(super(), _ATTEMPT)()


def _where(server: URL) -> str:
    port = server.port or (5671 if server.scheme == "amqps" else 5672)
    return f"{server.host}:{port}{server.path if server.path not in ('', '/') else ''}"  # never the password


async def connect(
    url: str, what: str, connection_class: type[ServersConnection] = ServersConnection, *, tls: ClientTls | None = None
) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself) to the first node of ``url`` that answers,
    or RetryableError naming each node and why."""
    try:
        context = tls.context() if tls is not None else None  # amqps:// without it: the system's CAs
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"{what}: the TLS files cannot be used: {exc}") from exc
    try:
        servers = broker_servers(url)
    except ValueError as exc:  # bus validate says so first; a url from the environment may change
        raise RetryableError(f"{what}: {exc}") from None
    failed: list[str] = []
    for first, server in enumerate(servers):
        # aio_pika.connect_robust, with the connection in hand: cancelled while it connects (the hub
        # stopping during a start), a robust connection goes on reconnecting in the background, and
        # takes the cancellation of its task at the process's end for a failed attempt: it never ends.
        connection = connection_class(servers, first, ssl_context=context)
        try:
            await connection.connect(timeout=10)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await connection.close()
            if isinstance(exc, OSError | AMQPError | TimeoutError):
                failed.append(f"{_where(server)}: {exc!r}")
                continue
            raise
        return connection
    said = "; ".join(failed)
    raise RetryableError(f"{what}: cannot connect to AMQP broker {said}" if len(failed) == 1 else f"{what}: no AMQP node answers ({said})")


async def exists(connection: AbstractRobustConnection, kind: Literal["queue", "exchange"], name: str) -> bool:
    """Whether the broker has the queue or exchange ``name``, asked passively on a channel of its
    own (a missing one closes the channel it is asked on).

    One that exists is used as it is: declared again with other settings than its own (a quorum
    queue, a queue with a TTL or a dead-letter exchange, an exchange of another type) the broker
    refuses with PRECONDITION_FAILED and closes the channel, and the adapter could not start."""
    try:
        async with connection.channel() as channel:
            if kind == "queue":
                await channel.declare_queue(name, passive=True)
            else:
                await channel.declare_exchange(name, passive=True)
    except ChannelNotFoundEntity:
        return False
    return True
