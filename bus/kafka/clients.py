"""Producer, consumer and admin factories: one place that turns KafkaConfig into aiokafka settings."""

from __future__ import annotations

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_RECORD_BYTES",
    "MEASURE_ABOVE",
    "client_options",
    "make_admin",
    "make_consumer",
    "make_producer",
    "outside_bootstrap",
    "stop_consumer",
]

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from bus.config.models import KafkaConfig, KafkaOAuth
from bus.errors import BusError
from bus.kafka.oauth import ClientCredentialsTokens
from bus.kafka.partitioner import partitioner
from bus.metrics import KAFKA_CLIENT_WARNINGS


class _ClientWarnings(logging.Handler):
    """Counts what aiokafka complains about (it retries most cluster faults inside, where the hub
    cannot see them), so a moving or struggling cluster shows in metrics and not only in the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        KAFKA_CLIENT_WARNINGS.labels(record.name.removeprefix("aiokafka.")).inc()


logging.getLogger("aiokafka").addHandler(_ClientWarnings())
log = logging.getLogger("bus.kafka.clients")


def client_options(config: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    """Connection and security options shared by every client (TLS and SASL pass through)."""
    sec = config.security
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": config.client_id,
        "security_protocol": sec.protocol,
        "metadata_max_age_ms": config.metadata_max_age_ms,
    }
    if sec.protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
        )
    if sec.protocol.startswith("SASL_"):
        options["sasl_mechanism"] = sec.sasl_mechanism or "PLAIN"
        if sec.oauth is not None:
            options["sasl_oauth_token_provider"] = _tokens(sec.oauth)
        else:
            options["sasl_plain_username"] = sec.sasl_username
            options["sasl_plain_password"] = sec.sasl_password.get_secret_value() if sec.sasl_password else None
    return options


_token_providers: dict[int, ClientCredentialsTokens] = {}


def _tokens(config: KafkaOAuth) -> ClientCredentialsTokens:
    """One token provider per config block: every client of the process shares its token."""
    provider = _token_providers.get(id(config))
    if provider is None or provider.config is not config:
        provider = _token_providers[id(config)] = ClientCredentialsTokens(config)
    return provider


# The largest record the hub produces (value, key and headers, as aiokafka counts them):
# aiokafka's own default, and about Kafka's default message.max.bytes.
MAX_RECORD_BYTES = 1_048_576
# The largest event the hub takes in, or a route's transform may make: the rest is room for the
# headers later hops add to the same value (bus_route, a dead letter's reason), so that a copy or
# a dead letter of any event the hub took can be produced too. Larger ones are refused where they
# arise (bus/runtime/publisher.py, routing/dispatch.py): no retry could ever store them.
MAX_EVENT_BYTES = MAX_RECORD_BYTES - 64 * 1024
# Below this a value (with its key) is not measured with its headers: the hub's own headers are
# small and bounded (an id and a subject are at most 4,096 characters, bus/mapping.py).
MEASURE_ABOVE = MAX_EVENT_BYTES - 48 * 1024


def make_producer(config: KafkaConfig, bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    # acks=all: an inbound source is acknowledged only after every in-sync replica has the event.
    # No idempotent producer: open aiokafka bugs, and the embedded broker lacks InitProducerId
    # (docs/embedded-broker.md). Duplicates are handled by idempotency keys downstream.
    options = {
        "acks": "all",
        "linger_ms": config.linger_ms,
        "compression_type": None,
        "request_timeout_ms": int(config.produce_timeout_s * 1000),
        "partitioner": partitioner,  # the same choice as aiokafka's default, faster
        "max_request_size": MAX_RECORD_BYTES,
        **client_options(config, bootstrap),
        **overrides,
    }
    return AIOKafkaProducer(**options)


def make_consumer(config: KafkaConfig, bootstrap: str, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    # Commits are always explicit: an offset is committed only after its event is settled.
    # group_id None: a reader of assigned partitions that never commits (bus.kafka.reader.replay).
    options = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": max(300, config.session_timeout_ms // 5),
        "max_poll_records": 500,
        "fetch_max_wait_ms": config.fetch_max_wait_ms or (25 if config.bootstrap == "embedded" else 500),
        **client_options(config, bootstrap),
        **overrides,
    }
    return AIOKafkaConsumer(*topics, **options)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, without the CancelledError it can raise that is not the caller's.

    aiokafka's fetcher cancels its pending fetches at a stop and awaits them; one cancelled in
    its back-off after a failed fetch (Kafka unreachable) lets the CancelledError out of
    ``stop()`` (aio-libs/aiokafka#647). Raised in the hub's stop, it ended the stop there: the
    steps after it (the producer, the embedded broker) were never taken. Only a cancellation of
    the calling task itself goes on up."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("a Kafka consumer's stop raised a CancelledError of its own (Kafka unreachable): it is stopped")


def make_admin(config: KafkaConfig, bootstrap: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(config, bootstrap))


def outside_bootstrap(bootstrap: str) -> str:
    """The address a command-line tool uses: never "embedded", which only the running hub can resolve."""
    if bootstrap == "embedded":
        raise BusError(
            "the embedded broker lives inside the running hub: pass --bootstrap HOST:PORT "
            "(the hub logs it at start: 'embedded Kafka broker (Tansu) listening on ...')"
        )
    return bootstrap
