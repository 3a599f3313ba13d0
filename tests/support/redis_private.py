"""A Redis server of the test's own, for settings the machine's shared server cannot take without
disturbing the other tests (a memory limit that refuses writes, users with narrow permissions).

redis-server on a free port, nothing kept on disk; it starts in well under a second.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
