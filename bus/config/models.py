"""Config models of the core: Kafka, schema registry, servers, routes, and the hub as a whole.

Adapter blocks are validated by each adapter's own ``Config`` (see ``bus.config.loader``).
"""

from __future__ import annotations

__all__ = [
    "MAX_TOKEN_CHARS",
    "HttpServerConfig",
    "HubConfig",
    "KafkaConfig",
    "KafkaOAuth",
    "KafkaSecurity",
    "LeasesConfig",
    "LineageConfig",
    "OpsServerConfig",
    "OpsToken",
    "RouteConfig",
    "SchemaRegistryConfig",
    "plain_token",
]

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bus.config.base import ConfigModel
from bus.config.connections import ConnectionConfig, CredentialsConfig
from bus.config.fields import Duration, duration
from bus.config.migrations import MigrationConfig
from bus.config.routes import RouteConfig, RouterConfig, TableConfig
from bus.credentials.client_credentials import ClientCredentialsGrant
from bus.tracing import TracingConfig


class KafkaOAuth(ClientCredentialsGrant):
    """SASL/OAUTHBEARER tokens from an OIDC provider (the client credentials grant), as managed Kafka
    services ask (Confluent Cloud, Aiven, Event Hubs, Strimzi with Keycloak)."""

    extensions: dict[str, str] = Field(
        default_factory=dict,
        description="SASL extensions sent with the token (Confluent Cloud: logicalCluster, identityPoolId).",
    )


class KafkaSecurity(ConfigModel):
    """TLS and SASL settings, passed through to aiokafka."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(default="PLAINTEXT", description="Kafka security.protocol.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        default=None, description="SASL mechanism, with a SASL_* protocol (OAUTHBEARER takes its tokens from `oauth`)."
    )
    oauth: KafkaOAuth | None = Field(default=None, description="With sasl_mechanism OAUTHBEARER: where the tokens come from.")
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (a secret: use ${ENV}).")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the brokers with.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(default=None, description="Client key for mutual TLS.")

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSecurity:
        sasl = self.protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism == "OAUTHBEARER" and self.oauth is None:
            raise ValueError("sasl_mechanism OAUTHBEARER needs `oauth` (token_url, client_id, client_secret)")
        if sasl and self.sasl_mechanism != "OAUTHBEARER" and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(f"protocol {self.protocol} with {self.sasl_mechanism or 'PLAIN'} needs sasl_username and sasl_password")
        if not sasl and (self.sasl_mechanism or self.oauth):
            raise ValueError(f"sasl_mechanism and oauth need a SASL_PLAINTEXT or SASL_SSL protocol, not {self.protocol}")
        return self


class KafkaConfig(ConfigModel):
    bootstrap: str = Field(
        default="embedded",
        description='"embedded" starts the Tansu broker shipped with the hub; otherwise host:port[,host:port].',
        examples=["embedded", "kafka-0:9092,kafka-1:9092"],
    )
    client_id: str = Field(
        default="integration-bus",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="The client id every Kafka client of the hub sends: what the brokers' request logs and metrics name it "
        "by, and what client quotas match. To tell the processes apart, put the pod's name in it "
        '(`"integration-bus-${HOSTNAME}"`).',
    )
    embedded_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description='With bootstrap "embedded": the port the embedded broker listens on (127.0.0.1); 0 picks a free one. '
        "CLI commands find it anyway through the hub's ops port (`bus dlq ... --hub http://127.0.0.1:9090`).",
    )
    topic_prefix: str = Field(
        default="bus",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Prefix of every topic the hub creates (`<prefix>.deliver.<outbound>`, `<prefix>.canonical.<schema>`...): "
        "with the name it is joined to, at most 249 characters, as Kafka takes; `bus validate` says which name goes past.",
    )
    partitions: int = Field(default=6, ge=1, le=1000, description="Partitions of the topics the hub creates.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of the topics the hub creates.")
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    linger_ms: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="How long the producer waits to fill a batch. A webhook is answered only after Kafka's ack, so this "
        "adds to every inbound call; the router and delivery produce whole batches regardless. 5 ms cost about 14 ms of "
        "median webhook-to-target latency at 1,000 events/s (bench/RESULTS.md).",
    )
    fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=60_000,
        description="Longest a consumer's fetch waits for new records. Default: 500 on a Kafka cluster (it answers as soon "
        "as records arrive); 25 on the embedded broker, which holds every fetch for the whole wait (a 500 ms wait made "
        "each hop about 200 ms slower).",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Consumer-group session timeout. The embedded broker holds a first join for about half of it.",
    )
    produce_timeout_s: float = Field(
        default=10.0, gt=0, description="How long an inbound adapter waits for Kafka's acknowledgement before answering 'try later'."
    )
    metadata_max_age_ms: int = Field(
        default=10_000,
        ge=1000,
        description="How often every client refreshes the cluster's metadata (leaders, brokers) even when nothing failed. "
        "aiokafka does not refresh it when a consumer's offset lookup (ListOffsets) hits a moved leader: that consumer "
        "waits for this refresh. Kafka's default of 5 minutes stalled a new consumer group for as long after a leader "
        "move (tests/faults/test_cluster_faults.py); 10 s bounds the stall at the cost of one small request per client.",
    )
    join_timeout_s: float = Field(
        default=120.0,
        ge=5,
        description="How long the router or a subscriber may wait for its consumer group's join (or rejoin after a "
        "rebalance) to complete before it is treated as stuck: the component is logged, counted in "
        "bus_component_restarts_total and started again with a new consumer. Above the session timeout and the time "
        "the slowest member of the group takes to rejoin.",
    )


class SchemaRegistryConfig(ConfigModel):
    url: str = Field(
        default="embedded",
        description=(
            '"embedded" serves the Confluent REST API from the hub (schemas kept in a compacted topic); otherwise the registry URL.'
        ),
        examples=["embedded", "http://schema-registry:8081"],
    )
    username: str | None = Field(default=None, description="Basic-auth user for an external registry.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password for an external registry.")


class HttpServerConfig(ConfigModel):
    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on. Loopback by default, so a hub started on a laptop or a server is not open to "
        "the network by accident; the Helm chart sets 0.0.0.0 (the pod's network policy decides who reaches it).",
        examples=["127.0.0.1", "0.0.0.0"],  # noqa: S104 - an example for a pod, documented as such
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Port; 0 picks a free one.")
    idle_timeout_s: float = Field(
        default=75.0,
        gt=0,
        description="A connection that sends no complete request for this long is closed (idle keep-alive connections, "
        "and clients that send their headers too slowly).",
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        description="Connections open at once, at most; more are closed as they come (bus_http_refused_total, reason "
        "too_many_connections, and a WARNING while the limit is reached). Without it a client opening connections without "
        "end took the process's file descriptors, and with them Kafka's connections and every adapter's.",
    )


class OpsToken(ConfigModel):
    """A token for the ops port: the management API (/api/v1, every call) and the embedded registry's writes."""

    name: str = Field(description="Who holds it; written in the log with every write made with it.", examples=["ci", "platform-team"])
    token: SecretStr = Field(description="The token itself (a secret: use ${ENV} or ${file:...}).")
    scope: Literal["read", "write"] = Field(default="write", description="read: may read what is not open; write: may also change.")

    @field_validator("token")
    @classmethod
    def _one_word_of_ascii(cls, value: SecretStr) -> SecretStr:
        # A token with a space, a line break or another script was never matched: said here, without its value.
        if not plain_token(value.get_secret_value()):
            raise ValueError(f"a token is one word of printable ASCII (no spaces or line breaks), 1 to {MAX_TOKEN_CHARS} characters")
        return value


MAX_TOKEN_CHARS = 4096


def plain_token(token: str) -> bool:
    """Whether ``token`` is what an Authorization header carries whole: one word of printable ASCII
    (the config's ``ops.tokens`` and the ``bus`` command's ``--token-file`` are held to it alike)."""
    return 0 < len(token) <= MAX_TOKEN_CHARS and token.isascii() and token.isprintable() and not any(c.isspace() for c in token)


class OpsServerConfig(HttpServerConfig):
    port: int = Field(default=9090, ge=0, le=65535, description="Port; 0 picks a free one.")
    tokens: list[OpsToken] = Field(
        default_factory=list,
        description="Tokens for the write endpoints. Health, readiness, metrics and registry reads are open; without a "
        "token every write is refused (401).",
    )


class LineageConfig(ConfigModel):
    """The event lineage index (``GET /api/v1/events/{id}``, the console's search): one topic,
    ``<prefix>._lineage``, written by the router and the delivery workers with the batches they
    already produce (bus/lineage.py; its cost per event is measured in bench/lineage_cost.py)."""

    enabled: bool = Field(default=True, description="Record where every event went. Off: lookups answer that lineage is off.")
    partitions: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Partitions of the index topic. A lookup reads one of them, so more partitions make lookups cheaper. "
        "Set it before the first start: entries already written stay where the old count put them.",
    )
    retention_hours: float = Field(default=168, gt=0, description="How long lineage is kept (the index topic's retention.ms).")


class LeasesConfig(ConfigModel):
    """Sources read by one hub process at a time (pollers, postgres_cdc, file, mqtt inbound): when
    the process that reads one hands it to another (bus.app.leased_inbound)."""

    hand_over_after: Duration | None = Field(
        default=duration("60s"),
        description="A process that cannot read its source this long (the adapter's start keeps failing, or it is not "
        "healthy: the source unreachable from that pod's node) hands it to another process that may reach it. null: never; "
        "it reads on, or waits, where it is.",
    )
    passed_by_for: Duration = Field(
        default=duration("10m"),
        description="After handing a source over, how long a process is given it back only if no other process could read it "
        "either: a source down for every process is not passed round and round.",
    )

    @model_validator(mode="after")
    def _positive(self) -> LeasesConfig:
        if self.hand_over_after is not None and self.hand_over_after.total_seconds() < 1:
            raise ValueError("hand_over_after must be at least 1s (null: never hand a source over)")
        return self


class HubConfig(ConfigModel):
    """The whole hub, but for ``inbound``/``outbound``: each entry there is checked against its
    adapter's own model (``bus.config.loader``), and the JSON Schema lists them per adapter type."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    schema_registry: SchemaRegistryConfig = Field(default_factory=SchemaRegistryConfig)
    http: HttpServerConfig = Field(default_factory=HttpServerConfig, description="Server for inbound webhooks.")
    ops: OpsServerConfig = Field(
        default_factory=OpsServerConfig,
        description="Server for /healthz, /readyz, /metrics and the embedded schema registry.",
    )
    schema_dirs: list[Path] = Field(default_factory=list, description="Extra folders of .avsc files besides the built-in ones.")
    router: RouterConfig = Field(default_factory=RouterConfig)
    tables: list[TableConfig] = Field(default_factory=list, description="Lookup tables for enrichment.")
    routes: list[RouteConfig] = Field(default_factory=list)
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="OpenTelemetry spans (the traceparent travels regardless).")
    lineage: LineageConfig = Field(default_factory=LineageConfig, description="Where every event went, for lookups by id or key.")
    leases: LeasesConfig = Field(
        default_factory=LeasesConfig, description="When a source read by one hub process at a time is handed to another."
    )
    credentials: CredentialsConfig | None = Field(default=None, description="Where the tokens of `connections` are kept, encrypted.")
    connections: list[ConnectionConfig] = Field(
        default_factory=list, description="OAuth2 authorization-code connections adapters call APIs with (`bus auth login NAME`)."
    )
    migrations: list[MigrationConfig] = Field(
        default_factory=list, description="Jobs that move what a source already holds through the routes (`bus migrate`)."
    )

    @model_validator(mode="after")
    def _connections_have_a_store(self) -> HubConfig:
        if self.connections and self.credentials is None:
            raise ValueError("connections need credentials: {key: ...} to keep their tokens encrypted (`bus auth key` makes a key)")
        names = [c.name for c in self.connections]
        if len(names) != len(set(names)):
            raise ValueError(f"connection names must be unique: {sorted({n for n in names if names.count(n) > 1})}")
        return self
