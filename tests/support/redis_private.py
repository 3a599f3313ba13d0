"""A Redis server of the test's own, for settings the machine's shared server cannot take without
disturbing the other tests (a memory limit that refuses writes, users with narrow permissions).

redis-server on a free port, nothing kept on disk; it starts in well under a second.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
