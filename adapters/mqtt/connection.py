"""Reaching an MQTT broker, for the ``mqtt`` inbound and outbound alike.

The inbound acknowledges (PUBACK) a message only once Kafka has its event. paho-mqtt, under
aiomqtt, acknowledges on receipt unless its ``manual_ack`` mode is on; aiomqtt does not expose
it, nor the paho client it wraps. ``PahoAcks`` is the one place that reaches it (through
aiomqtt's ``_client``), checked when the adapter starts so a change in aiomqtt fails the start
with a clear error instead of acknowledging messages the hub has not stored.
"""

from __future__ import annotations

__all__ = [
    "BoundedReads",
    "PahoAcks",
    "PublishOutcomes",
    "Server",
    "SessionFlag",
    "client_for",
    "connect",
    "connect_first",
    "publish_properties",
    "user_property",
]

import ssl
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.client import MQTT_LOG_ERR
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode

from bus.adapter_api import KEPT_OF_TOO_LARGE, MAX_MESSAGE_BYTES, RetryableError, Truncated

# How long an MQTT 5 broker keeps a persistent session (and the messages not yet acknowledged)
# after the hub disconnects; 3.1.1 sessions have no expiry.
SESSION_EXPIRY_S = 7 * 24 * 3600


Server = tuple[str, int]
W = TypeVar("W")  # what watches a client from before its CONNECT


async def connect_first(
    config: Any, last: Server | None, make: Callable[[Server], tuple[aiomqtt.Client, W]]
) -> tuple[aiomqtt.Client, W, Server]:
    """Connect to the broker's nodes in turn until one answers; the one connected to last is tried
    first (a restart after a lost connection: most losses are a blip, not a node down).

    ``make(server)`` builds the client and what must watch it from before its CONNECT (the
    acknowledgements, the session flag, the CONNACK's limits); it comes back with the client
    and the node. None answering raises RetryableError with each node's reason."""
    servers: list[Server] = config.servers()
    failed: list[str] = []
    for server in sorted(servers, key=lambda s: s != last) if last in servers else servers:
        client, watching = make(server)
        try:
            await connect(client, config, server)
        except RetryableError as exc:
            failed.append(str(exc))
            continue
        return client, watching, server
    if len(failed) == 1:
        raise RetryableError(failed[0])
    raise RetryableError(f"mqtt {config.name}: no broker node answers ({'; '.join(failed)})")


def client_for(config: Any, identifier: str | None, *, persistent: bool, server: tuple[str, int]) -> aiomqtt.Client:
    credentials: dict[str, Any] = {"username": config.username, "password": config.password.get_secret_value() if config.password else None}
    if config.tls is not None:  # the files are read at each connection: a renewed certificate is taken up
        try:
            credentials["tls_context"] = config.tls.context()
        except (OSError, ssl.SSLError) as exc:
            raise RetryableError(f"mqtt {config.name}: the TLS files cannot be used: {exc}") from exc
    if config.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        return aiomqtt.Client(
            *server,
            **credentials,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            timeout=10,
        )
    return aiomqtt.Client(*server, **credentials, identifier=identifier, clean_session=not persistent, timeout=10)


def user_property(message: aiomqtt.Message, name: str) -> str | None:
    """An MQTT 5 user property of a received message (None on 3.1.1, which has none)."""
    for key, value in getattr(message.properties, "UserProperty", None) or ():
        if key == name:
            return str(value)
    return None


def publish_properties(**user: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = list(user.items())
    return properties


async def connect(client: aiomqtt.Client, config: Any, server: tuple[str, int]) -> None:
    # What paho met while connecting (a broker refusing the TLS handshake for want of a client
    # certificate): aiomqtt then waits for a CONNACK that never comes and says only "Operation
    # timed out". paho's ``on_log`` is its public hook for those lines.
    met: list[str] = []
    paho: Any = getattr(client, "_client", None)
    if paho is not None:

        def note(_client: Any, _userdata: Any, level: int, line: str) -> None:
            if level == MQTT_LOG_ERR:
                met.append(line)

        paho.on_log = note
    try:
        await client.__aenter__()
    except BaseException as exc:
        # A try that timed out or was cancelled (the hub stopping) left paho's socket open and
        # aiomqtt's housekeeping task running: one more of each per retry, for as long as a broker
        # takes connections and never answers. Closing the socket through paho also ends the task.
        if paho is not None:
            paho._sock_close()
        if not isinstance(exc, aiomqtt.MqttError):
            raise
        raise RetryableError(f"mqtt {config.name}: cannot connect to {server[0]}:{server[1]}: {exc}{_why(met, config)}") from exc
    finally:
        if paho is not None:
            paho.on_log = None  # while set, paho formats its every debug line, one per packet


# Words of a TLS failure in what paho met, in whichever case OpenSSL's text and paho's own put them.
_TLS_SIGNS = ("ssl", "tls", "eof", "alert", "certificate", "handshake")


def _why(met: list[str], config: Any) -> str:
    """What paho met, for the error: the TLS alert when one came (it names the cause), else its
    last line. Under TLS 1.3 a broker that wants a client certificate checks for it after the
    handshake, and whether its alert or only the closed socket ("EOF occurred") reaches the hub
    is a race: so a TLS failure without a client certificate of the hub's says what to try."""
    if not met:
        return ""
    line = next((seen for seen in met if "alert" in seen.lower()), met[-1])
    hint = ""
    tls = getattr(config, "tls", None)
    if tls is not None and tls.cert is None and any(sign in line.lower() for sign in _TLS_SIGNS):
        hint = "; if the broker asks for a client certificate, give tls.cert and tls.key"
    return f" ({line}{hint})"


class SessionFlag:
    """Whether the broker still had the client's session when it connected (CONNACK's "session
    present"), which aiomqtt does not pass on: read from paho's connect callback, wrapped before
    connecting (checked at start, like ``PahoAcks``)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        paho = getattr(client, "_client", None)
        given = getattr(paho, "on_connect", None)
        if paho is None or given is None:
            raise RuntimeError(
                f"aiomqtt {getattr(aiomqtt, '__version__', '?')} no longer wraps a paho client as before: "
                "whether the broker kept the session cannot be read"
            )
        self.present = False

        def on_connect(*args: Any) -> None:  # paho's version 2 callback: (client, userdata, flags, reason, properties)
            self.present = bool(getattr(args[2], "session_present", False)) if len(args) > 2 else False
            given(*args)

        paho.on_connect = on_connect


# The packet id of the PUBLISH the current task sent last: set by ``PublishOutcomes``'s wrap of
# paho's publish, which aiomqtt calls in the publishing task, and read in that task after the wait.
_SENT: ContextVar[int] = ContextVar("mqtt_publish_mid")

# PUBACK reason codes (MQTT 5, 3.4.2.1) that will be given again to the same message: not
# authorized, topic name invalid, payload format invalid. The others (unspecified, implementation
# specific, packet identifier in use, quota exceeded) may pass, and are retried.
REFUSED_FOR_GOOD = frozenset({0x87, 0x90, 0x99})


class PublishOutcomes:
    """What an MQTT 5 broker answered to each publish, which aiomqtt drops.

    A broker that does not take a QoS 1 message says so in its PUBACK's reason code (0x87 "Not
    authorized" for a topic its ACL denies, 0x97 "Quota exceeded", ...), and aiomqtt's publish
    returns as for a stored message: the hub counted such an event delivered and it was gone. paho
    hands the code to its ``on_publish`` callback, which is wrapped here; ``refusal()`` gives the
    current task's last publish's code if it was a failure. The broker's Maximum Packet Size and
    Maximum QoS (its CONNACK) are kept too: a larger PUBLISH, or one at a higher QoS, makes the
    broker close the connection, on every try.
    MQTT 3.1.1 has neither: its broker acknowledges a message it drops like one it stores.

    Reaches paho through aiomqtt's ``_client``, like ``PahoAcks``; checked at start.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        paho: Any = getattr(client, "_client", None)
        hooks = ("publish", "on_publish", "on_connect")
        if paho is None or not all(callable(getattr(paho, name, None)) for name in hooks):
            raise RuntimeError(
                f"aiomqtt {getattr(aiomqtt, '__version__', '?')} no longer wraps a paho client as before: "
                "a broker's refusal of a message (its PUBACK's reason code) could not be read"
            )
        self.maximum_packet_size: int | None = None
        self.maximum_qos: int | None = None  # MQTT 5 brokers that take less than QoS 2 say so
        self._refused: dict[int, ReasonCode] = {}
        publish, on_publish, on_connect = paho.publish, paho.on_publish, paho.on_connect

        def publish_noting_its_id(*args: Any, **kwargs: Any) -> Any:
            info = publish(*args, **kwargs)
            _SENT.set(info.mid)
            return info

        def on_publish_noting_refusals(client: Any, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
            if reason.is_failure:
                self._refused[mid] = reason
            on_publish(client, userdata, mid, reason, properties)

        def on_connect_noting_limits(*args: Any) -> None:  # (client, userdata, flags, reason, properties)
            properties = args[4] if len(args) > 4 else None
            self.maximum_packet_size = getattr(properties, "MaximumPacketSize", None)
            self.maximum_qos = getattr(properties, "MaximumQoS", None)
            on_connect(*args)

        paho.publish = publish_noting_its_id
        paho.on_publish = on_publish_noting_refusals
        paho.on_connect = on_connect_noting_limits

    def refusal(self) -> ReasonCode | None:
        """The broker's failure code for the publish this task made last, if it refused it."""
        mid = _SENT.get(None)
        return None if mid is None else self._refused.pop(mid, None)


def publish_packet_size(topic: str, payload: bytes, properties: Properties | None, *, protocol: str) -> int:
    """The bytes of a QoS 1 PUBLISH packet as paho builds it (MQTT 3.3): fixed header, topic,
    packet id, MQTT 5's properties, payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    if protocol == "5":
        remaining += len(properties.pack()) if properties is not None else 1  # type: ignore[no-untyped-call]
    return 1 + len(VariableByteIntegers.encode(remaining)) + remaining  # type: ignore[no-untyped-call]


class PahoAcks:
    """Manual acknowledgement on an aiomqtt client: set before connecting, ``ack`` per message."""

    def __init__(self, client: aiomqtt.Client) -> None:
        paho = getattr(client, "_client", None)
        if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
            raise RuntimeError(
                f"aiomqtt {getattr(aiomqtt, '__version__', '?')} no longer wraps a paho client as before: "
                "manual acknowledgement cannot be switched on, so messages would be acknowledged before Kafka has them"
            )
        paho.manual_ack_set(True)  # paho's public switch for what aiomqtt does not expose
        self._paho = paho

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)


_PUBLISH = 0x30  # the packet type of PUBLISH, in the first byte's high nibble
# What is read of a PUBLISH too large to read: its topic (up to 64 KiB), id and properties, and the
# payload's start, of which a dead letter keeps 64 KiB.
_KEPT = 256 * 1024
_CHUNK = 1024 * 1024  # read and dropped at a time


class BoundedReads:
    """Reads no MQTT message larger than ``limit`` whole.

    paho-mqtt reads a packet whole before handing it on, whatever its size (an MQTT broker takes
    messages of up to 256 MiB): one such message took about three times its size in memory, the
    hub was killed at its memory limit, and the persistent session gave the same message again at
    every start. The paho client's socket reads are wrapped: of a PUBLISH over ``limit``, the first
    256 KiB and the last byte are kept (paho then decodes its topic, id and properties as usual)
    and the rest is read in 1 MiB pieces and dropped; its payload's start reaches the adapter as a
    ``Truncated`` with the whole's size, and is parked with its reason like any message too large to read.
    3.1.1 has no way to tell the broker a largest packet, and MQTT 5's (Maximum Packet Size) makes
    the broker drop the message unsaid, so the limit is kept here, for both.

    Like ``PahoAcks``, this reaches paho's private read state; checked at start, so a change in
    paho fails the start with a clear error instead of reading without a bound.
    """

    def __init__(self, client: aiomqtt.Client, limit: int = MAX_MESSAGE_BYTES) -> None:
        paho: Any = getattr(client, "_client", None)
        state = getattr(paho, "_in_packet", None)
        fields = {"command", "have_remaining", "remaining_length", "to_process", "packet"}
        hooks = all(callable(getattr(paho, name, None)) for name in ("_sock_recv", "_handle_on_message"))
        if not (isinstance(state, dict) and fields <= state.keys() and hooks):
            raise RuntimeError(
                "paho-mqtt no longer reads packets as before (_in_packet, _sock_recv, _handle_on_message): "
                "a message of any size would be read whole into memory"
            )
        self._paho = paho
        self._limit = limit
        self._recv = paho._sock_recv
        self._deliver = paho._handle_on_message
        self._cut: int | None = None  # the packet length of the PUBLISH being cut, until paho hands it on
        paho._sock_recv = self._bounded_recv
        paho._handle_on_message = self._handed_on

    def _bounded_recv(self, bufsize: int) -> bytes:
        packet = self._paho._in_packet
        if not packet["have_remaining"]:
            self._cut = None  # a new packet's head: whatever was cut before was handed on or lost with its connection
            return self._recv(bufsize)  # type: ignore[no-any-return]
        length = packet["remaining_length"]
        if packet["command"] & 0xF0 != _PUBLISH or length <= self._limit:
            return self._recv(bufsize)  # type: ignore[no-any-return]
        self._cut = length
        held, left = len(packet["packet"]), packet["to_process"]
        if held < _KEPT:
            return self._recv(min(bufsize, _KEPT - held))  # type: ignore[no-any-return]
        if left <= 1:  # the last byte is handed to paho, which then decodes the packet
            return self._recv(1)  # type: ignore[no-any-return]
        dropped = self._recv(min(left - 1, _CHUNK))  # BlockingIOError: paho is called again when more comes
        if not dropped:
            return b""  # the connection closed: paho says so
        packet["to_process"] -= len(dropped)
        raise BlockingIOError  # nothing for paho to add; it is called again when the socket is readable

    def _handed_on(self, message: Any) -> None:
        if self._cut is not None:
            # What paho decoded is the kept start and the last byte: the payload's size is the
            # packet's less its topic, id and properties.
            size = self._cut - (_KEPT + 1 - len(message.payload))
            message.payload = Truncated(bytes(message.payload[: min(len(message.payload) - 1, KEPT_OF_TOO_LARGE)]), size)
            self._cut = None
        self._deliver(message)
