"""Reading no AMQP message larger than ``MAX_MESSAGE_BYTES`` whole, for the ``amqp`` inbound.

aiormq assembles each message's body frames into one ``bytes`` before handing it on, whatever its
size: RabbitMQ 3 takes messages of up to 128 MiB by default (512 MiB configured), and one such
message cost about twice its size in memory; with ``prefetch`` of them in flight while Kafka is
slow, the hub went past a pod's memory limit, and the queue gave the same messages again at every
start. The content header says a message's size before its body comes, so a body over the limit
is read frame by frame (each up to the connection's frame size) and dropped but for its start,
which reaches the adapter as a ``Truncated`` with the whole's size and is parked with its reason,
as the ``mqtt`` inbound does.

aiormq has no setting for this: ``BoundedChannel`` wraps its channel's ``_read_content`` each time
aio-pika opens the channel (at start and after every reconnection), checked at that moment so a
change in aiormq fails the start with a clear error instead of reading without a bound.
"""

from __future__ import annotations

__all__ = ["BoundedChannel", "BoundedConnection", "bound_reads"]

from typing import Any

from aio_pika import RobustChannel
from aiormq.abc import DeliveredMessage
from pamqp.body import ContentBody

from adapters.amqp.connection import ServersConnection
from bus.adapter_api import KEPT_OF_TOO_LARGE, MAX_MESSAGE_BYTES, Truncated


def bound_reads(channel: Any, limit: int = MAX_MESSAGE_BYTES) -> None:
    """Wrap an aiormq channel's body reading: a body over ``limit`` is kept only from its start."""
    read_whole = getattr(channel, "_read_content", None)
    if not callable(read_whole) or not callable(getattr(channel, "_get_frame", None)):
        raise RuntimeError(  # noqa: TRY004 - a library that changed, not a caller's wrong type
            "aiormq no longer reads message bodies as before (_read_content, _get_frame): a message of any size would be "
            "read whole into memory"
        )
    if getattr(read_whole, "bounded", False):
        return

    async def read_content(frame: Any, header: Any) -> DeliveredMessage:
        size = header.body_size or 0
        if size <= limit:
            return await read_whole(frame, header)  # type: ignore[no-any-return]
        kept, seen = bytearray(), 0
        while seen < size:
            content = await channel._get_frame()
            if not isinstance(content, ContentBody):
                raise ValueError(f"unexpected frame {content!r} inside a message's body", content)  # noqa: TRY004 - as aiormq's own
            seen += len(content.value)
            if len(kept) < KEPT_OF_TOO_LARGE:
                kept += content.value[: KEPT_OF_TOO_LARGE - len(kept)]
        return DeliveredMessage(delivery=frame, header=header, body=Truncated(bytes(kept), size), channel=channel)

    read_content.bounded = True  # type: ignore[attr-defined]
    channel._read_content = read_content


class BoundedChannel(RobustChannel):
    """aio-pika's robust channel, its bodies read with a bound at every (re)opening."""

    async def _on_open(self) -> None:
        # Before the consumers are restored (super), so that no message is read unbounded.
        underlay = self._channel
        if underlay is not None:
            bound_reads(underlay.channel)
        await super()._on_open()


class BoundedConnection(ServersConnection):
    """A robust connection (over a cluster's nodes) whose channels are ``BoundedChannel``s."""

    CHANNEL_CLASS = BoundedChannel
