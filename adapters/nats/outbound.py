"""``nats`` outbound: publish each event to JetStream; delivered once the stream acknowledged it.

The event id is the ``Nats-Msg-Id`` header: a redelivery within the stream's duplicate window is
dropped by JetStream itself. Permanent (dead letter, with the server's reason: fix the stream,
then ``bus dlq replay``): no stream takes the subject; the stream refuses the message as a bad
request (over its ``max_msg_size``); the message is over the server's ``max_payload``. Retried: a
timeout, a lost connection, a stream that is full for now (``discard: new`` at its limits, a 503).
"""

from __future__ import annotations

__all__ = ["NatsOutbound"]

from typing import Any, ClassVar

from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError

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
            self._connection = await connect(
                self.config.url.get_secret_value(),
                f"nats {self.config.name}",
                self.config.tls,
                credentials=self.config.credentials,
                nkey_seed=self.config.nkey_seed,
            )

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
        except BadRequestError as exc:  # sent again, it is refused again: the stream's max_msg_size, say
            raise PermanentError(f"the JetStream stream refused the message for {subject!r}: {_said(exc)}") from exc
        except MaxPayloadError as exc:  # raised by the client before sending: it never fits this server
            raise PermanentError(
                f"the message is {len(payload):,} bytes, over the NATS server's max_payload of "
                f"{self._connection.max_payload:,} for {subject!r}"
            ) from exc
        except APIError as exc:  # a stream full for now (503, discard: new), a leader being elected: retried
            raise RetryableError(f"JetStream did not take the message for {subject!r}: {_said(exc)}") from exc
        except NatsTimeout as exc:
            raise RetryableError(f"no acknowledgement from JetStream within {self.config.timeout_s:g}s for {subject!r}") from exc
        except NatsError as exc:
            raise RetryableError(f"NATS publish to {subject!r} failed: {exc!r}") from exc


def _said(exc: APIError) -> str:
    """The server's own words (nats-py's repr of these errors is only their class name)."""
    return f"{exc.description or type(exc).__name__} (status {exc.code}, error code {exc.err_code})"
