"""Reaching a RabbitMQ broker, for the ``amqp`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect"]

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError

from bus.adapter_api import RetryableError


async def connect(url: str, what: str, connection_class: type[RobustConnection] = RobustConnection) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself), or RetryableError naming the broker."""
    try:
        return await aio_pika.connect_robust(url, timeout=10, connection_class=connection_class)
    except (OSError, AMQPError, TimeoutError) as exc:
        host = url.rsplit("@", 1)[-1]  # never log the password
        raise RetryableError(f"{what}: cannot connect to AMQP broker {host}: {exc!r}") from exc
