"""Config models of the Redis adapter family: Streams in (a consumer group), Streams, strings and hashes out."""

from __future__ import annotations

__all__ = ["RedisInboundConfig", "RedisOutboundConfig", "Sentinel"]

from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bus.adapter_api import (
    AdapterConfig,
    BodyMap,
    ConfigModel,
    Duration,
    EmitSpec,
    Expression,
    OutboundConfig,
    TemplateText,
    TlsConnection,
    whole_number,
)


class Sentinel(ConfigModel):
    """Redis Sentinel: the sentinels say which server is the primary now, and after a failover."""

    master: str = Field(min_length=1, description="The name the sentinels know the primary by.", examples=["mymaster"])
    nodes: list[str] = Field(
        min_length=1,
        description="The sentinels, host:port (26379 by default).",
        examples=[["sentinel-0.redis:26379", "sentinel-1.redis:26379", "sentinel-2.redis:26379"]],
    )
    password: SecretStr | None = Field(default=None, description="The sentinels' own password (requirepass), if they ask for one.")

    @field_validator("nodes")
    @classmethod
    def _host_ports(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            _address(node)
        return nodes

    def addresses(self) -> list[tuple[str, int]]:
        return [_address(node) for node in self.nodes]


def _address(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":") if ":" in node else (node, "", "26379")
    number = whole_number(port, 65535)
    if not host or not number:
        raise ValueError(f"{node!r} is not host:port")
    return host, number


class _Server(TlsConnection, AdapterConfig):
    url: SecretStr = Field(
        description="Server URL: redis://[user:password@]host:port/db (use ${ENV} for the password); rediss:// for TLS.",
        examples=["redis://redis:6379/0", "rediss://default:${REDIS_PASSWORD}@cache.example.com:6380/0"],
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a redis:// or rediss:// URL (TLS), not {parts.scheme + '://' if parts.scheme else url!r}")
        if not parts.hostname:
            raise ValueError("the URL names no host: redis://host:6379/0")
        path = parts.path.strip("/")
        if path and whole_number(path) is None:
            raise ValueError(f"the URL's path is the database number (redis://host:6379/0), not {parts.path!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"the URL's port: {exc}") from None
        return value

    sentinel: Sentinel | None = Field(
        default=None,
        description="Find the primary through Redis Sentinel: the url's user, password, database and scheme are used, its "
        "host and port are not. After a failover the next connection goes to the new primary.",
    )

    cluster: bool = Field(
        default=False,
        description="The url names a node of a Redis Cluster (open-source cluster mode: self-run, ElastiCache or MemoryDB "
        "with cluster mode on, a cluster's configuration endpoint): the other nodes are found from it, and each command goes "
        "to the primary that serves its key's slot, following the cluster as slots move and replicas are promoted. Only "
        "database 0 exists there.",
    )

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> _Server:
        if self.tls is not None and not self.url.get_secret_value().startswith("rediss://"):
            raise ValueError("tls is for a rediss:// url (TLS); this url is plain redis://")
        if self.cluster:
            if self.sentinel is not None:
                raise ValueError("cluster and sentinel do not go together: a Redis Cluster promotes its replicas itself")
            database = urlsplit(self.url.get_secret_value()).path.strip("/")
            if database not in ("", "0"):
                raise ValueError(f"a Redis Cluster has only database 0; the url names database {database}")
            if self.tls is not None and self.tls.key_password is not None:
                raise ValueError(
                    "tls.key_password: the Redis Cluster client cannot read a key protected by a password; give it the key "
                    "unprotected (a secret mounted as a file)"
                )
        return self


class RedisInboundConfig(_Server):
    """Read a Redis Stream through a consumer group. Each entry is acknowledged (XACK) only after
    Kafka has its event; an entry that cannot become one goes to the inbound dead-letter topic with
    the reason, then is acknowledged. The group keeps the position in Redis: a restarted hub goes on
    where it stopped, and the replicas of the hub share the stream's entries between them. Entries
    a consumer took and never acknowledged (a pod that died) are taken over after `claim_after`."""

    type: Literal["redis"] = "redis"
    stream: str = Field(min_length=1, description="The stream's key.", examples=["orders"])
    group: str | None = Field(default=None, min_length=1, description="Consumer group; default bus-<name>.")
    declare: bool = Field(
        default=True, description="Create the group (and the stream, empty) if missing; off: both must exist, or the start fails saying so."
    )
    start_at: Literal["oldest", "newest"] = Field(
        default="oldest",
        description="Where a group made by the hub starts: oldest (every entry the stream holds) or newest (entries added from now "
        "on). An existing group goes on from its own position.",
    )
    field: str | None = Field(
        default=None,
        min_length=1,
        description="The entry field holding the JSON document (`data`, `payload`...). Default: the entry's fields themselves, "
        'as an object of strings ({"id": "42", "status": "paid"}).',
        examples=["data"],
    )
    batch: int = Field(default=100, ge=1, le=10_000, description="Entries read at once (and in flight, unacknowledged).")
    claim_after: Duration = Field(
        default=timedelta(minutes=1),
        description="An entry another consumer of the group took and has not acknowledged for this long (its process died) is "
        "taken over and read here. Entries a process holds (while Kafka cannot take their events) are claimed afresh by it "
        "every third of this, so they are not taken over.",
    )
    emit: EmitSpec = Field(description="How the JSON document becomes a canonical event.")

    @field_validator("claim_after")
    @classmethod
    def _claim_after(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("at least 1s: a consumer that is working on an entry would have it taken away")
        return value


class RedisOutboundConfig(OutboundConfig, _Server):
    """Write each event to Redis: appended to a stream (XADD), or kept under a key as a JSON
    string (SET) or a hash (HSET): a cache or lookup table other systems read. A delivery counts
    once Redis answered."""

    type: Literal["redis"] = "redis"
    command: Literal["xadd", "set", "hset"] = Field(
        description="xadd: append an entry to the stream `key`; set: the key holds the body as JSON; hset: the key is a hash of "
        "the body's fields (a record or list as its JSON text, a time as RFC 3339)."
    )
    key: TemplateText = Field(
        description="The stream (xadd) or the key (set, hset): a ${} template over the event's fields.",
        examples=["customers:${customer_id}", "billing.invoices"],
    )
    body: BodyMap = Field(
        default=None,
        description="Field -> expression over the event's fields ($id, $type... for metadata), or a nested block. "
        "Default: the event's fields.",
        examples=[{"name": "name", "email": "email", "updated": "$time"}],
    )
    entry: Literal["json", "fields"] = Field(
        default="json",
        description="xadd: how the body goes into the entry: json (one field `data` holding it as JSON, beside the event's "
        "CloudEvents attributes as ce_* fields) or fields (each of the body's fields an entry field, beside ce_id).",
    )
    maxlen: int | None = Field(
        default=None,
        ge=1,
        description="xadd: trim the stream to about this many entries (MAXLEN ~), so it does not grow for ever.",
        examples=[1_000_000],
    )
    dedupe_window: Duration = Field(
        default=timedelta(minutes=2),
        description="xadd: an event id added within this time is not added again (a redelivery after an answer that was lost): "
        "one key per event id, `<stream>:bus-ids:<id>`, expiring after it. 0s: off (each delivery appends).",
    )
    ttl: Duration | None = Field(default=None, description="set, hset: the key expires this long after its last write.", examples=["7d"])
    replace: bool = Field(
        default=True,
        description="hset: the hash holds exactly the body's fields (fields from an earlier write that the body no longer has "
        "are removed, in the same transaction); off: fields are added and overwritten, never removed.",
    )
    delete_when: Expression | None = Field(
        default=None,
        description="set, hset: an expression; when true, the key is deleted instead (a customer removed at the source).",
        examples=['status == "deleted"'],
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for Redis's answer; then retry.")

    @model_validator(mode="after")
    def _fits_the_command(self) -> RedisOutboundConfig:
        xadd, keyed = ("xadd",), ("set", "hset")
        only = {"entry": xadd, "maxlen": xadd, "dedupe_window": xadd, "ttl": keyed, "delete_when": keyed, "replace": ("hset",)}
        misplaced = [
            f"{field} (only with {' or '.join(which)})"
            for field, which in only.items()
            if field in self.model_fields_set and self.command not in which
        ]
        if misplaced:
            raise ValueError(f"with command {self.command}, {' and '.join(misplaced)} would do nothing: take it out")
        if self.ttl is not None and self.ttl < timedelta(seconds=1):
            raise ValueError("ttl: at least 1s (a key that expires at once holds nothing)")
        return self
