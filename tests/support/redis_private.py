"""A Redis server of the test's own, for settings the machine's shared server cannot take without
disturbing the other tests (a memory limit that refuses writes, users with narrow permissions),
and setups made of several (a primary watched by a sentinel, a Redis Cluster).

redis-server on a free port, nothing kept on disk; it starts in well under a second.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bus.ports import free_port
from tests.support.private_server import binaries_missing, launch, stop_server, wait_listening


@contextmanager
def private_redis(*settings: str, tls: tuple[Path, Path, Path] | None = None) -> Iterator[int]:
    """Yields the port of a fresh server started with ``settings`` (``--maxmemory``, ``1mb``, ...);
    stops and removes it after. With ``tls`` (its certificate, key, and the CA its clients'
    certificates must be signed by) it takes only TLS connections, with a client certificate."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        binaries_missing("the Redis server (redis-server) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="bus-redis-"))
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    if tls is None:
        command += ["--port", str(port)]
    else:
        cert, key, clients_ca = tls
        command += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        command += ["--tls-ca-cert-file", str(clients_ca), "--tls-auth-clients", "yes"]
    server = launch([*command, *settings], folder)
    try:
        wait_listening(server, port, "Redis server", folder)
        yield port
    finally:
        stop_server(server, folder)


@dataclass
class SentinelSetup:
    """A primary, its replica and a sentinel watching them (quorum 1: a failover within seconds)."""

    primary: int
    replica: int
    sentinel: int
    _primary_server: subprocess.Popen[bytes]
    _primary_folder: Path

    def kill_primary(self) -> None:
        """The primary's process ends at once (SIGKILL): the sentinel promotes the replica."""
        self._primary_server.kill()
        stop_server(self._primary_server, self._primary_folder)


@contextmanager
def redis_with_sentinel(master: str = "mymaster") -> Iterator[SentinelSetup]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        binaries_missing("the Redis server (redis-server) is not installed")
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:

        def start(command: list[str], port: int, what: str) -> tuple[subprocess.Popen[bytes], Path]:
            folder = Path(tempfile.mkdtemp(prefix="bus-redis-"))  # a replica's copy of the data is written there
            server = launch([binary, *command, "--dir", str(folder)], folder)
            started.append((server, folder))
            wait_listening(server, port, what, folder)
            return server, folder

        primary, replica, watcher = free_port(), free_port(), free_port()
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        primary_server, primary_folder = start(["--port", str(primary), *base], primary, "Redis primary")
        start(["--port", str(replica), *base, "--replicaof", "127.0.0.1", str(primary)], replica, "Redis replica")
        folder = Path(tempfile.mkdtemp(prefix="bus-sentinel-"))
        (folder / "sentinel.conf").write_text(
            f"port {watcher}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {master} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {master} 1000\nsentinel failover-timeout {master} 5000\n"
        )
        server = launch([binary, str(folder / "sentinel.conf"), "--sentinel"], folder)
        started.append((server, folder))
        wait_listening(server, watcher, "Redis sentinel", folder)
        yield SentinelSetup(primary, replica, watcher, primary_server, primary_folder)
    finally:
        for server, folder in reversed(started):
            stop_server(server, folder)


@dataclass
class ClusterSetup:
    """A Redis Cluster of the test's own: its primaries' ports (each serving a third of the slots)
    and, with replicas, each replica's port by its primary's."""

    primaries: list[int]
    replicas: dict[int, int]
    _servers: dict[int, tuple[subprocess.Popen[bytes], Path]]
    ca: Path | None = None  # TLS only, its server certificates signed by this CA

    def url(self) -> str:
        return f"{'rediss' if self.ca else 'redis'}://127.0.0.1:{self.primaries[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A client of the one node at ``port`` (over TLS when the cluster takes only that)."""
        return _node(port, self.ca)

    def owner(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now, as a live node sees it."""
        slot = key_slot(key.encode())
        with self.node(next(iter(self._servers))) as client:
            for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(port)
        raise AssertionError(f"no node serves slot {slot}")

    def move_slot_of(self, key: str, to: int) -> None:
        """The slot of ``key`` and every key in it moved to the primary at port ``to``, as
        `redis-cli --cluster reshard` does it: IMPORTING and MIGRATING, MIGRATE of its keys (a
        stream with its consumer groups), then the slot given to its new owner on every node.
        Clients meanwhile get ASK redirects, then MOVED."""
        slot, source = key_slot(key.encode()), self.owner(key)
        if source == to:
            return
        with self.node(source) as old, self.node(to) as new:
            old_id, new_id = old.execute_command("CLUSTER", "MYID"), new.execute_command("CLUSTER", "MYID")
            new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", old_id)
            old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
            while keys := old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                old.execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
            for port in self.primaries:
                with self.node(port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)

    def kill(self, port: int) -> None:
        """The node's process ends at once (SIGKILL): its replica is promoted once the others
        count it as failed (cluster-node-timeout, 1 s here)."""
        server, folder = self._servers.pop(port)
        server.kill()
        stop_server(server, folder)


@contextmanager
def redis_cluster(*, replicas: bool = False, tls: tuple[Path, Path, Path] | None = None) -> Iterator[ClusterSetup]:
    """Three primaries (and a replica of each, with ``replicas``) made a cluster by
    `redis-cli --cluster create`, every slot served, nothing kept on disk. With ``tls`` (the
    nodes' certificate, its key and their CA) the nodes take only TLS, from clients and from each
    other (ElastiCache's in-transit encryption), without asking clients for a certificate; the
    nodes ask each other for one, so theirs must serve as a client's too (``Authority.issue(peer=True)``)."""
    binary, cli = shutil.which("redis-server") or "/usr/bin/redis-server", shutil.which("redis-cli") or "/usr/bin/redis-cli"
    if not Path(binary).exists() or not Path(cli).exists():
        binaries_missing("the Redis server and its redis-cli are not installed")
    servers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        ports = [free_port() for _ in range(6 if replicas else 3)]
        for port in ports:
            folder = Path(tempfile.mkdtemp(prefix="bus-redis-cluster-"))
            command = [binary, "--cluster-port", str(free_port()), "--bind", "127.0.0.1"]
            if tls is None:
                command += ["--port", str(port)]
            else:
                cert, key, ca = tls
                command += ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes"]
                command += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
                command += ["--tls-auth-clients", "no"]
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
            command += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
            servers[port] = (launch(command, folder), folder)
            wait_listening(servers[port][0], port, "Redis Cluster node", folder)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        over_tls = ["--tls", "--cacert", str(tls[2])] if tls else []
        made = subprocess.run(
            [cli, *over_tls, "--cluster", "create", *nodes, "--cluster-replicas", "1" if replicas else "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if made.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout.decode()[-2000:]} {made.stderr.decode()[-2000:]}")
        deadline = time.monotonic() + 30
        ca = tls[2] if tls else None
        while not all(_cluster_ok(port, ca) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the test's Redis Cluster did not reach cluster_state:ok in 30 s")
            time.sleep(0.1)
        primaries, of = [], {}
        for port in ports:
            with _node(port, ca) as client:
                role = client.execute_command("ROLE")
                if role[0] == b"master":
                    primaries.append(port)
                else:
                    of[int(role[2])] = port
        yield ClusterSetup(sorted(primaries), of, servers, ca)
    finally:
        for server, folder in servers.values():
            stop_server(server, folder)


def _node(port: int, ca: Path | None) -> redis.Redis:
    options: dict[str, Any] = {} if ca is None else {"ssl": True, "ssl_ca_certs": str(ca)}
    return redis.Redis(host="127.0.0.1", port=port, **options)


def _cluster_ok(port: int, ca: Path | None) -> bool:
    with _node(port, ca) as client:
        info = client.execute_command("CLUSTER", "INFO").decode()
    return "cluster_state:ok" in info
