"""Reaching a RabbitMQ broker, for the ``amqp`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect", "exists"]

import contextlib
import ssl
from typing import Literal

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from bus.adapter_api import ClientTls, RetryableError


async def connect(
    url: str, what: str, connection_class: type[RobustConnection] = RobustConnection, *, tls: ClientTls | None = None
) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself), or RetryableError naming the broker."""
    try:
        context = tls.context() if tls is not None else None  # amqps:// without it: the system's CAs
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"{what}: the TLS files cannot be used: {exc}") from exc
    # aio_pika.connect_robust, with the connection in hand: cancelled while it connects (the hub
    # stopping during a start), a robust connection goes on reconnecting in the background, and
    # takes the cancellation of its task at the process's end for a failed attempt: it never ends.
    connection = connection_class(aio_pika.connection.make_url(url), ssl_context=context)
    try:
        await connection.connect(timeout=10)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await connection.close()
        if isinstance(exc, OSError | AMQPError | TimeoutError):
            host = url.rsplit("@", 1)[-1]  # never log the password
            raise RetryableError(f"{what}: cannot connect to AMQP broker {host}: {exc!r}") from exc
        raise
    return connection


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
