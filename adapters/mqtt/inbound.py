"""``mqtt`` inbound: subscribe with QoS 1; acknowledge (PUBACK) each message once Kafka has its event.

The consume loop and the in-order acknowledgement are ``bus.queue_inbound``'s; manual
acknowledgement is switched on in ``adapters.mqtt.connection``. A message the hub has not stored
is never acknowledged: with a persistent session the broker delivers it again after a restart.
MQTT has no negative acknowledgement, so while Kafka cannot take an event the message is held
and tried again.

The broker's answer to each subscription is read: one it refuses (an ACL that denies the topic
filter, on brokers that say so in the SUBACK) fails the start, retried, with the broker's reason in
``/readyz``, as a broker that cannot be reached does; it used to look subscribed while nothing came.
One granted at QoS 0 only (a broker's ``max_qos 0``) is said at WARNING and in the console's
attention: such messages come without an acknowledgement, so one in flight when the hub stops is lost.
"""

from __future__ import annotations

__all__ = ["MqttInbound"]

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import aiomqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters.mqtt.config import MqttInboundConfig
from adapters.mqtt.connection import BoundedReads, PahoAcks, Server, SessionFlag, client_for, connect_first, user_property
from bus.adapter_api import Context, KafkaUnavailable, RetryableError
from bus.queue_inbound import QueueInbound


class MqttInbound(QueueInbound[MqttInboundConfig]):
    Config: ClassVar[type[MqttInboundConfig]] = MqttInboundConfig
    summary: ClassVar[str] = "Subscribe to MQTT topics (QoS 1); acknowledge only after Kafka acknowledged."
    family: ClassVar[str] = "mqtt"
    one_reader: ClassVar[bool] = True  # one session per client id: the broker hands it to the last client to connect

    def __init__(self, config: MqttInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._client: aiomqtt.Client | None = None
        self._server: tuple[str, int] | None = None  # the broker node connected to last
        self._acks: PahoAcks | None = None
        self._pass_retained = False  # this connection found its session kept: retained messages are re-sends
        self._new_filters: list[str] = []  # topics the kept session did not have: their retained messages are new
        self._at_most_once: list[str] = []  # topic filters the broker granted at QoS 0 only
        self._lost_session = ""  # said while the broker has not kept the hub's session since it lost one

    async def open(self) -> None:
        def make(server: Server) -> tuple[aiomqtt.Client, tuple[PahoAcks, SessionFlag]]:
            client = client_for(
                self.config, self.config.client_id or f"bus-{self.config.name}", persistent=self.config.persistent_session, server=server
            )
            BoundedReads(client)  # a message over 16 MiB is parked from its start, never read whole
            return client, (PahoAcks(client), SessionFlag(client))

        client, (acks, session), server = await connect_first(self.config, self._server, make)
        self._server = server
        # A broker sends retained messages again whenever a client subscribes, and the hub subscribes
        # at every start and reconnect: each was published again as a new event. A session the broker
        # kept already brought what was published meanwhile (retain flag 0). MQTT 5 says so at the
        # broker (retain handling 1: only for a subscription it did not have); on 3.1.1 retained
        # messages are passed over (acknowledged, not published) when the session was kept.
        kept = self.config.persistent_session and session.present
        self._pass_retained = self.config.protocol != "5" and kept
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB) if self.config.protocol == "5" else None
        try:
            if self.config.persistent_session and not session.present:
                await self._say_if_session_lost()
            elif kept:
                self._lost_session = ""
            # The topics the kept session has (saved at each start): a topic the config no longer
            # names is unsubscribed (the broker kept sending its messages, published as events after
            # it was taken out of the config), and one it did not have takes its retained messages.
            had = await self._subscribed() if kept else None
            self._new_filters = [t for t in self.config.topics if had is not None and t not in had]
            gone = [t for t in had or () if t not in self.config.topics]
            if gone:
                await client.unsubscribe(gone)
                self.ctx.logger.info("mqtt %s unsubscribed its kept session from %s (no longer in the config)", self.config.name, gone)
            granted = {}
            for topic in self.config.topics:
                if options is not None:
                    granted[topic] = await client.subscribe(topic, options=options)
                else:
                    granted[topic] = await client.subscribe(topic, qos=1)
            self._check_granted(granted)
            if self.config.persistent_session and (had is None or sorted(had) != sorted(self.config.topics)):
                await self._remember_subscribed()
        except (aiomqtt.MqttError, KafkaUnavailable, RetryableError) as exc:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            if isinstance(exc, RetryableError):
                raise
            raise RetryableError(f"mqtt {self.config.name}: cannot subscribe to {self.config.topics}: {exc}") from exc
        self._client, self._acks = client, acks
        self.ctx.logger.info("mqtt %s subscribed to %s on %s:%d", self.config.name, self.config.topics, *server)

    def _check_granted(self, granted: Mapping[str, Sequence[Any]]) -> None:
        """The SUBACK of each subscription: a refusal is an error, QoS 0 (no acknowledgements) a warning."""
        refused = {topic: codes[0] for topic, codes in granted.items() if _value(codes[0]) >= 0x80}
        if refused:
            said = ", ".join(
                f"{topic!r}: {getattr(code, 'getName', lambda: 'Failure')()} (0x{_value(code):02x})" for topic, code in refused.items()
            )
            raise RetryableError(f"mqtt {self.config.name}: the broker refused the subscription to {said}")
        at_most_once = [topic for topic, codes in granted.items() if _value(codes[0]) == 0]
        if at_most_once != self._at_most_once and at_most_once:
            self.ctx.logger.warning("mqtt %s: %s", self.config.name, _at_most_once(at_most_once))
        self._at_most_once = at_most_once

    async def _say_if_session_lost(self) -> None:
        """The broker has no session for the hub's client id, though the hub subscribed under it
        before (its topics are saved with its position): what was published to them while the hub
        was away is gone, unsaid by MQTT. Said at WARNING and in the console's attention."""
        before = await self._subscribed()
        if not before:
            return  # the first start under this id (or a hub that kept no record): nothing was expected
        client_id = self.config.client_id or f"bus-{self.config.name}"
        self._lost_session = (
            f"the broker did not keep the hub's session (client id {client_id}): messages published to "
            f"{', '.join(map(repr, before))} while the hub was away are lost, but for retained ones (the broker restarted "
            "without persistence, the session expired, or another client connected with the same id)"
        )
        self.ctx.logger.warning("mqtt %s: %s", self.config.name, self._lost_session)

    def attention(self) -> str:
        return "; ".join(filter(None, [self._lost_session, _at_most_once(self._at_most_once) if self._at_most_once else ""]))

    async def _subscribed(self) -> list[str] | None:
        """The topics the persistent session was last subscribed to, or None if never said (a hub
        before this one: its retained messages are all taken as re-sends, nothing unsubscribed)."""
        if self.ctx.checkpoints is None:
            return None
        saved = await self.ctx.checkpoints.load(self.config.name)
        topics = saved.get("topics") if saved else None
        return [str(t) for t in topics] if isinstance(topics, list) else None

    async def _remember_subscribed(self) -> None:
        if self.ctx.checkpoints is not None:
            await self.ctx.checkpoints.save(self.config.name, {"topics": list(self.config.topics)})

    async def messages(self) -> AsyncIterator[aiomqtt.Message]:
        assert self._client is not None
        passed = 0
        async for message in self._client.messages:
            if self._pass_retained and message.retain and not any(topic_matches_sub(new, str(message.topic)) for new in self._new_filters):
                await self.ack(message)
                passed += 1
                if passed == 1:
                    self.ctx.logger.info(
                        "mqtt %s: its session was kept, so retained messages the broker sends again on subscribing are "
                        "passed over (what was published meanwhile comes from the session)", self.config.name,
                    )  # fmt: skip
                continue
            yield message

    def empty(self) -> Literal["dead_letter", "skip"]:
        return self.config.empty

    def empty_means(self, message: aiomqtt.Message) -> str:
        return "an empty message (how MQTT clears a topic's retained message, sent to the topic's subscribers)"

    def payload(self, message: aiomqtt.Message) -> bytes:
        return message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()

    def origin(self, message: aiomqtt.Message) -> Mapping[str, str]:
        return {"bus_origin": f"mqtt:{message.topic}"}

    def traceparent(self, message: aiomqtt.Message) -> str | None:
        """The sender's W3C trace context: an MQTT 5 user property (3.1.1 has no place for one)."""
        return user_property(message, "traceparent")

    async def ack(self, message: aiomqtt.Message) -> None:
        assert self._acks is not None
        self._acks.ack(message)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    def connected(self) -> bool:
        return self._client is not None


def _value(code: Any) -> int:
    """A SUBACK's code: paho gives MQTT 5's as a ReasonCode and 3.1.1's granted QoS as an int or a ReasonCode."""
    return int(getattr(code, "value", code))


def _at_most_once(topics: list[str]) -> str:
    return (
        f"the broker granted {', '.join(map(repr, topics))} at QoS 0 only (its max_qos): those messages come without an "
        "acknowledgement, so one in flight when the hub stops or loses its connection is lost; allow QoS 1 at the broker"
    )
