"""A NATS server (with JetStream) of the test's own, for settings the machine's shared server
cannot take without disturbing the other tests (TLS that asks every client for a certificate).

nats-server on a free port with a config written into a temporary folder; it starts in well under
a second.
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
def private_nats(config: str = "", *, files: dict[str, Path] | None = None) -> Iterator[int]:
    """Yields the port of a fresh server whose config adds ``config`` (nats-server.conf text, in
    which ``{dir}`` names the server's folder, where ``files`` are copied); stops and removes it after."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        binaries_missing("the NATS server (nats-server) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="bus-nats-"))
    for name, source in (files or {}).items():
        shutil.copyfile(source, folder / name)
    port = free_port()
    text = f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{folder / "js"}" }}\n' + config.replace("{dir}", str(folder))
    (folder / "nats-server.conf").write_text(text)
    server = launch([binary, "-c", str(folder / "nats-server.conf")], folder)
    try:
        wait_listening(server, port, "NATS server", folder)
        yield port
    finally:
        stop_server(server, folder)
