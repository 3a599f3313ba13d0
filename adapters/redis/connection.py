"""Reaching a Redis server, for the ``redis`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["UNANSWERED", "connect", "where"]

import contextlib
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.asyncio.sentinel import Sentinel as Sentinels
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
)

from adapters.redis.config import Sentinel
from bus.adapter_api import ClientTls, RetryableError

# What a command may fail with when a server or the cluster does not answer, or answers
# "not now". Two of redis-py's cluster errors (no node reachable, a slot no node serves yet) are
# not RedisErrors: not caught here, they would be taken for a bug of the adapter's.
UNANSWERED = (RedisError, RedisClusterUnreachableError, SlotNotCoveredError, OSError)

# The nodes each cluster (by its url's node) had when a client last reached it. A client made
# again (an adapter restarted after a primary failed) starts from any of them: the url's node may
# be the one that failed, and a client that knew only it could not find the cluster again.
_CLUSTER_NODES: dict[str, list[tuple[str, int]]] = {}


def where(url: str, sentinel: Sentinel | None = None, *, cluster: bool = False) -> str:
    """The server as logs may show it: host, port and database (or the primary the sentinels
    name, or the cluster a node belongs to), never the password."""
    parts = urlsplit(url)
    database = parts.path.strip("/") or "0"
    if sentinel is not None:
        return f"primary {sentinel.master!r}/{database} of the sentinels at {', '.join(sentinel.nodes)}"
    if cluster:
        return f"{_host_port(url)} (cluster)"
    return f"{_host_port(url)}/{database}"


async def connect(
    url: str,
    what: str,
    *,
    tls: ClientTls | None,
    timeout_s: float,
    client_name: str,
    sentinel: Sentinel | None = None,
    cluster: bool = False,
) -> Redis:
    """A client whose server answered a PING, or RetryableError naming the server.

    The client's own retries are off: a command sent again after a lost answer could append to a
    stream twice, and the hub's runtime already backs off and retries (adapters never retry on
    their own). A cluster client still follows MOVED and ASK redirects (the command did not run
    where it was sent). ``timeout_s`` bounds connecting and every answer: a server that takes the
    connection and never answers fails the call instead of holding it.

    A server's mode and ``cluster`` must agree: a single-node client of a cluster node would have
    every key of another node's slots refused (MOVED), and dead-letter those events."""
    options: dict[str, Any] = {}
    if tls is not None:
        options.update(
            ssl_ca_certs=str(tls.ca) if tls.ca else None,
            ssl_certfile=str(tls.cert) if tls.cert else None,
            ssl_keyfile=str(tls.key) if tls.key else None,
        )
        if tls.key_password is not None:  # never with a cluster: its client takes no key password (refused at load)
            options["ssl_password"] = tls.key_password.get_secret_value()
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        **options,
    }
    client: Redis
    if cluster:
        known = [ClusterNode(host, port) for host, port in _CLUSTER_NODES.get(_host_port(url), [])]
        client = RedisCluster.from_url(url, startup_nodes=known, **common)  # type: ignore[assignment]  # the same commands, by key slot
    elif sentinel is None:
        client = Redis.from_url(url, **common)
    else:
        client = _through_sentinels(url, sentinel, common)
    shown = where(url, sentinel, cluster=cluster)
    try:
        await client.ping()
        if isinstance(client, RedisCluster):
            _CLUSTER_NODES[_host_port(url)] = [(node.host, node.port) for node in client.get_nodes()]
        else:
            await _not_a_cluster_node(client, what, shown)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await client.aclose()
        if isinstance(exc, RetryableError):
            raise
        if isinstance(exc, AuthenticationError) or (isinstance(exc, ResponseError) and "WRONGPASS" in str(exc)):
            raise RetryableError(f"{what}: Redis at {shown} refused the credentials: {exc}") from exc
        if isinstance(exc, MasterNotFoundError):  # none answered, or none knows the name
            raise RetryableError(f"{what}: cannot find the {shown}: {exc}") from exc
        if isinstance(exc, RedisClusterException) and "Cluster mode is not enabled" in str(exc):
            raise RetryableError(
                f"{what}: Redis at {_host_port(url)} is not a node of a Redis Cluster (its cluster mode is off): take out `cluster: true`"
            ) from exc
        if isinstance(exc, RedisClusterException):
            raise RetryableError(f"{what}: cannot reach {shown}: {exc}") from exc
        if isinstance(exc, RedisError | OSError | TimeoutError):
            raise RetryableError(f"{what}: cannot reach Redis at {shown}: {exc!r}") from exc
        raise
    return client


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


async def _not_a_cluster_node(client: Redis, what: str, shown: str) -> None:
    """RetryableError when the server is a node of a Redis Cluster (``cluster_enabled:1``). A
    server whose user may not ask INFO is taken as it says it is."""
    try:
        info = await client.info("cluster")
    except ResponseError:  # NOPERM for INFO: nothing to tell
        return
    if info.get("cluster_enabled") in (1, "1"):
        raise RetryableError(
            f"{what}: Redis at {shown} is a node of a Redis Cluster: set `cluster: true` (a single-node client would have "
            "every key another node serves refused with MOVED)"
        )


def _through_sentinels(url: str, sentinel: Sentinel, common: dict[str, Any]) -> Redis:
    """A client of the primary the sentinels name: each new connection asks them again, so after
    a failover the runtime's retry reaches the new primary (the old one answers READONLY, retried)."""
    parts = urlsplit(url)
    sentinel_options = {"socket_timeout": common["socket_timeout"], "socket_connect_timeout": common["socket_connect_timeout"]}
    if sentinel.password is not None:
        sentinel_options["password"] = sentinel.password.get_secret_value()
    sentinels: Any = Sentinels  # typed from redis 8.2 on, not before
    found = sentinels(sentinel.addresses(), sentinel_kwargs=sentinel_options)
    client: _ThroughSentinels = found.master_for(
        sentinel.master,
        redis_class=_ThroughSentinels,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(parts.path.strip("/") or 0),
        ssl=parts.scheme == "rediss",
        **common,
    )
    client.sentinels = found.sentinels
    return client


class _ThroughSentinels(Redis):
    """A client of the primary that closes its connections to the sentinels with its own (redis-py
    leaves them open: one socket per start of the adapter)."""

    sentinels: list[Redis] = []  # noqa: RUF012 - set per instance by _through_sentinels

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for watcher in self.sentinels:
            await watcher.aclose()
