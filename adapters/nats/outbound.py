"""``nats`` outbound: publish each event to JetStream; delivered once the stream acknowledged it.

The event id is the ``Nats-Msg-Id`` header: a redelivery within the stream's duplicate window is
dropped by JetStream itself. No stream for the subject is permanent (dead letter: create the
stream, then ``bus dlq replay``); a timeout or a lost connection is retried.
"""

from __future__ import annotations

__all__ = ["NatsOutbound"]

from typing import Any, ClassVar

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError

from adapters.nats.config import NatsOutboundConfig
from adapters.nats.connection import connect
from bus.adapter_api import Body, Context, Event, Health, Outbound, PermanentError, RetryableError, compile_template, one_level, target_json
from bus.cloudevents import prefixed_headers


class NatsOutbound(Outbound[NatsOutboundConfig]):
    Config: ClassVar[type[NatsOutboundConfig]] = NatsOutboundConfig
    summary: ClassVar[str] = "Publish each event as JSON to a NATS JetStream subject, acknowledged, de-duplicated by event id."

    def __init__(self, config: NatsOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        # A value is one subject token: '.' would publish a token deeper (another account's subject).
        self._subject = compile_template(config.subject, escape=one_level("the NATS subject", ".*> ", empty=False))
        self._connection: Any = None

    async def start(self) -> None:
        if self._connection is None:
            self._connection = await connect(self.config.url.get_secret_value(), f"nats {self.config.name}")

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def health(self) -> Health:
        ok = self._connection is not None and self._connection.is_connected
        return Health(ok, "" if ok else "not connected to NATS")

    async def deliver(self, event: Event) -> None:
        if self._connection is None:
            raise RetryableError(f"nats outbound {self.config.name} is not started")
        subject = self._subject(event.data, event.meta())
        payload = target_json(self._body.render(event), "message").encode()
        headers = {"Nats-Msg-Id": event.id, **prefixed_headers(event, "ce-")}  # the CloudEvents NATS binding, binary mode
        try:
            await self._connection.jetstream().publish(subject, payload, headers=headers, timeout=self.config.timeout_s)
        except (NoRespondersError, NoStreamResponseError) as exc:
            raise PermanentError(f"no JetStream stream takes subject {subject!r}") from exc
        except NatsTimeout as exc:
            raise RetryableError(f"no acknowledgement from JetStream within {self.config.timeout_s:g}s for {subject!r}") from exc
        except NatsError as exc:
            raise RetryableError(f"NATS publish to {subject!r} failed: {exc!r}") from exc
