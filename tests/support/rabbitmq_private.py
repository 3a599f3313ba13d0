"""A RabbitMQ node of the test's own, for settings the machine's shared broker cannot take without
disturbing the other tests (a small ``max_message_size``).

rabbitmq-server with its own node name, ports and folders; it takes about six seconds to start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bus.ports import free_port
from tests.support.private_server import binaries_missing, launch, wait_listening

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


@dataclass(frozen=True)
class RabbitNode:
    url: str  # amqp://guest:guest@127.0.0.1:PORT/
    tls_port: int  # where a listener set with ``listeners.ssl.default = {tls_port}`` listens


@contextmanager
def private_rabbitmq(*settings: str, files: dict[str, Path] | None = None) -> Iterator[RabbitNode]:
    """A fresh node started with ``settings`` (rabbitmq.conf lines: ``max_message_size = 2000``),
    in which ``{dir}`` names its folder (where ``files`` are copied) and ``{tls_port}`` a second
    free port; stopped and its folder removed after."""
    if not SERVER.exists():
        binaries_missing("the RabbitMQ server (rabbitmq-server) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="bus-rabbitmq-"))
    for name, source in (files or {}).items():
        shutil.copyfile(source, folder / name)
    port, distribution, tls_port = free_port(), free_port(), free_port()
    lines = [f"listeners.tcp.local = 127.0.0.1:{port}", "loopback_users = none"]
    lines += [line.format(dir=folder, tls_port=tls_port) for line in settings]
    (folder / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
    (folder / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": f"bus-test-{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(distribution),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(folder / "pid"),
    }
    # A session of its own: the script starts the Erlang VM as a child, and the whole group is stopped.
    server = launch([str(SERVER)], folder, env=env, start_new_session=True)
    try:
        wait_listening(server, port, "RabbitMQ", folder, timeout=60)
        if any("{tls_port}" in line for line in settings):
            wait_listening(server, tls_port, "RabbitMQ's TLS listener", folder, timeout=30)
        yield RabbitNode(f"amqp://guest:guest@127.0.0.1:{port}/", tls_port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)
