"""A PgBouncer of the test's own in front of the machine's PostgreSQL, in transaction mode (each
transaction, or each statement outside one, may run on another server connection), as many
managed and Kubernetes setups run it. Debian's PgBouncer 1.18, unpacked into .tools/ by `make
test`: it keeps no prepared statements across server connections."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.ports import free_port
from tests.support.private_server import launch, server_folder, stop_server, wait_listening
from tests.support.tools import tool


@contextmanager
def pgbouncer(database: str = "test", server_port: int = 5432) -> Iterator[int]:
    """Yields the port of a PgBouncer pooling ``database`` of the PostgreSQL at ``server_port``
    (user postgres, trust) in transaction mode; stops it after. It refuses to run as root: run as
    the postgres user then, as the private PostgreSQL servers are."""
    unpacked = Path(tool("pgbouncer"))
    folder, as_user = server_folder("bus-pgbouncer-", "postgres")
    # Its binary and library copied next to its files: the postgres user may not enter the checkout.
    binary, libraries = folder / "pgbouncer", folder / "lib"
    shutil.copy2(unpacked, binary)
    shutil.copytree(unpacked.parents[2] / "usr/lib/x86_64-linux-gnu", libraries)
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host=127.0.0.1 port={server_port} dbname={database}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
        "default_pool_size = 4\nmax_client_conn = 200\nignore_startup_parameters = extra_float_digits\n"
    )
    environment = {**os.environ, "LD_LIBRARY_PATH": str(libraries)}
    command = [*as_user, "env", f"LD_LIBRARY_PATH={libraries}", str(binary), str(folder / "pgbouncer.ini")] if as_user else None
    server = launch(command or [str(binary), str(folder / "pgbouncer.ini")], folder, env=environment)
    try:
        wait_listening(server, port, "PgBouncer", folder)
        yield port
    finally:
        stop_server(server, folder)
