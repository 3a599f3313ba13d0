"""A Mosquitto broker of the test's own, for what the machine's shared broker cannot be made to do
without disturbing the other tests: an ACL that denies topics, a largest packet.

mosquitto on a free port with a config written into a temporary folder; it starts in well under a
second. As root, the broker runs as the ``mosquitto`` user.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.ports import free_port
from tests.support.private_server import binaries_missing, launch, server_folder, stop_server, wait_listening


@contextmanager
def private_mosquitto(
    *settings: str, allowed: str | None = None, port: int | None = None, files: dict[str, Path] | None = None
) -> Iterator[int]:
    """Yields the port of a fresh anonymous broker with ``settings`` (mosquitto.conf lines:
    ``max_packet_size 1000``) and, with ``allowed``, an ACL letting clients read and write that
    topic filter only; stops and removes it after. ``port``: the one a broker stopped before had
    (a restart, as clients see it). ``files`` are copied into the broker's own folder (it may not
    read the test's), which settings name as ``{dir}``: ``cafile {dir}/ca.pem``."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not shutil.which(binary):
        binaries_missing("the Mosquitto broker (mosquitto) is not installed")
    folder, as_user = server_folder("bus-mosquitto-", "mosquitto")
    port = port or free_port()
    for name, source in (files or {}).items():
        shutil.copyfile(source, folder / name)
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", *(line.format(dir=folder) for line in settings)]
    if allowed is not None:
        (folder / "acl").write_text(f"topic readwrite {allowed}\n")
        lines.append(f"acl_file {folder / 'acl'}")
    (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    server = launch([*as_user, binary, "-c", str(folder / "mosquitto.conf")], folder)
    try:
        wait_listening(server, port, "Mosquitto", folder)
        yield port
    finally:
        stop_server(server, folder)
