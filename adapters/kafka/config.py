"""Config models of the Kafka adapter family (a foreign cluster, or the hub's own)."""

from __future__ import annotations

__all__ = ["KafkaInboundConfig", "KafkaOutboundConfig", "read_schema_file"]

from pathlib import Path
from typing import Any, Literal

from fastavro import parse_schema
from fastavro.schema import SchemaParseException
from pydantic import Field, SecretStr, field_validator, model_validator

from bus.adapter_api import (
    MAX_SCHEMA_FILE_BYTES,
    AdapterConfig,
    BodyMap,
    ConfigPath,
    EmitSpec,
    Expression,
    FileTooLarge,
    KafkaSecurity,
    OutboundConfig,
    TemplateText,
    parse_json,
    read_at_most,
)


def read_schema_file(path: Path) -> Any:
    """The Avro schema (as JSON) in ``path``, read bounded: what the config's check and the adapter read."""
    return parse_json(read_at_most(path, MAX_SCHEMA_FILE_BYTES))


class _Cluster(AdapterConfig):
    bootstrap: str = Field(description="The cluster's brokers, host:port[,host:port].", examples=["legacy-kafka:9092"])
    security: KafkaSecurity = Field(default_factory=KafkaSecurity, description="TLS and SASL, as for the hub's own cluster.")
    registry_url: str | None = Field(
        default=None,
        description="Schema Registry (Confluent REST API) for Avro in the Confluent wire format.",
        examples=["http://schema-registry:8081"],
    )
    registry_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the registry: a write token of a hub's embedded registry (its writes need one).",
    )
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="Consumer group session timeout (inbound).")
    client_id: str = Field(
        default="integration-bus",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="The client id sent to this cluster: what its owners' request logs and client quotas go by (the "
        "one they gave you, if they did).",
    )
    format: Literal["json", "avro"] = Field(
        default="json", description="json: UTF-8 JSON values; avro: the Confluent wire format (magic byte, schema id, Avro body)."
    )


class KafkaInboundConfig(_Cluster):
    """Bridge a topic another team or system writes into canonical events. Offsets are committed
    only after the hub's Kafka acknowledged the events, so a restart resumes where it stopped."""

    type: Literal["kafka"] = "kafka"
    topics: list[str] = Field(min_length=1, description="Topics to read.", examples=[["erp.orders.v1"]])
    group: str | None = Field(default=None, description="Consumer group; default bus-bridge-<name>.")
    start: Literal["earliest", "latest"] = Field(default="earliest", description="Where a new group starts.")
    isolation: Literal["read_committed", "read_uncommitted"] = Field(
        default="read_committed",
        description="read_committed: records of a transaction its producer aborted (Kafka Streams or Flink with "
        "exactly-once, Kafka Connect's exactly-once sources) are never read, and open transactions' records only once "
        "committed; a topic written without transactions reads the same either way. read_uncommitted reads them all, "
        "aborted ones too.",
    )
    tombstones: Literal["dead_letter", "skip"] = Field(
        default="dead_letter",
        description="A record with no value (a tombstone: a key deleted on a compacted topic, as Debezium writes after each "
        "delete): dead_letter parks it on the inbound dead letters saying so; skip passes over it, counted as "
        '`bus_inbound_events_total{outcome="skipped"}` and in the adapter\'s progress.',
    )
    emit: EmitSpec = Field(
        description="How a value becomes a canonical event. Default id: <topic>:<partition>:<offset>, stable across re-reads."
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaInboundConfig:
        if self.format == "avro" and not self.registry_url:
            raise ValueError("format avro needs registry_url: the writer schemas are fetched from it by id")
        return self


class KafkaOutboundConfig(_Cluster, OutboundConfig):
    """Publish each event to a topic, as JSON or as Avro in the Confluent wire format; delivered
    once the cluster acknowledged (acks=all). The event id travels in the ce_id header."""

    type: Literal["kafka"] = "kafka"
    topic: TemplateText = Field(description="Topic, a ${} template over the event.", examples=["erp.payments", "sensors.${site}"])
    key: Expression | None = Field(
        default=None, description="Expression for the record key; default the event's key.", examples=["customer_id"]
    )
    body: BodyMap = Field(default=None, description="The value: field -> expression; none sends the event's data as is.")
    schema_file: ConfigPath | None = Field(
        default=None,
        description="format avro: the .avsc the value is written with (relative to the config file); registered under "
        "<topic>-value at start.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the cluster's acknowledgement.")

    @field_validator("schema_file")
    @classmethod
    def _an_avro_schema(cls, path: Path | None) -> Path | None:
        # Read when the config loads, not at the adapter's start: a missing or broken file was found only then.
        if path is not None:
            try:
                parse_schema(read_schema_file(path))
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror}") from None
            except FileTooLarge as exc:
                raise ValueError(f"{exc}: not an Avro schema") from None
            except (ValueError, TypeError, KeyError, SchemaParseException) as exc:
                raise ValueError(f"{path} is not an Avro schema: {exc}") from None
        return path

    @model_validator(mode="after")
    def _check(self) -> KafkaOutboundConfig:
        if self.format == "avro" and (not self.registry_url or self.schema_file is None):
            raise ValueError("format avro needs registry_url and schema_file")
        return self
