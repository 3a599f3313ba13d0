"""A PostgreSQL server of the test's own, started with wal_level=logical for change data capture.

The machine's shared PostgreSQL runs with wal_level=replica, and changing it needs a restart of a
service other tests use; so the CDC tests start a private server from the same installed binaries
(initdb into a temporary folder, trust auth on loopback, fsync off). It takes about a second.
As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.ports import free_port
from tests.support.private_server import binaries_missing, launch, server_folder, stop_server, wait_listening


def server_tool(name: str) -> str:
    """A program of the PostgreSQL install the private server runs from (pg_recvlogical)."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / name).exists():
        binaries_missing(f"PostgreSQL's {name} is not installed")
    return str(bin_dir / name)


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def logical_postgres() -> Iterator[str]:
    """Yields the DSN of a fresh server with wal_level=logical; stops and removes it after."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        binaries_missing("PostgreSQL server binaries (initdb) are not installed")
    folder, as_user = server_folder("bus-pg-", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    server = launch(
        [*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
         "-c", "listen_addresses=127.0.0.1", "-c", "wal_level=logical", "-c", "fsync=off", "-c", "max_replication_slots=10"],
        folder,
    )  # fmt: skip
    try:
        wait_listening(server, port, "PostgreSQL", folder)
        # Listening is not taking connections: until its startup ends, PostgreSQL answers "the
        # database system is starting up" (a test connected then, on a loaded machine, and failed).
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test's PostgreSQL on port {port} did not take connections within 30 s")
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"], capture_output=True, check=False)
        stop_server(server, folder)
