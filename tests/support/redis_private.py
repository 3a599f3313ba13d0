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
def private_redis(*settings: str) -> Iterator[int]:
    """Yields the port of a fresh server started with ``settings`` (``--maxmemory``, ``1mb``, ...);
    stops and removes it after."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        binaries_missing("the Redis server (redis-server) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="bus-redis-"))
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    server = launch([*command, *settings], folder)
    try:
        wait_listening(server, port, "Redis server", folder)
        yield port
    finally:
        stop_server(server, folder)
