"""A MariaDB server of the test's own, for what the machine's shared server cannot be made to do
without disturbing the other tests: a legacy server's settings (``sql_mode=''``, the MySQL 5.6
era's default that many old applications still run with).

mariadb-install-db into a temporary folder (root without a password on loopback), then mariadbd
on a free port; it takes about a second. As root, the server runs as the ``mysql`` user.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.ports import free_port
from tests.support.private_server import binaries_missing, launch, server_folder, stop_server, wait_listening


@contextmanager
def private_mariadb(*settings: str, files: dict[str, Path] | None = None) -> Iterator[str]:
    """Yields the DSN (database ``test``) of a fresh server started with ``settings`` (mariadbd
    options: ``--sql-mode=``), in which ``{dir}`` names the server's folder, where ``files`` are
    copied (it may not read the test's); stops and removes it after."""
    install, server_bin = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if install is None or not Path(server_bin).exists():
        binaries_missing("MariaDB server binaries (mariadb-install-db, mariadbd) are not installed")
    folder, as_user = server_folder("bus-mariadb-", "mysql")
    for name, source in (files or {}).items():
        shutil.copyfile(source, folder / name)
        if as_user:
            shutil.chown(folder / name, "mysql")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_user, install, f"--datadir={data}", "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True,
        capture_output=True,
    )
    server = launch(
        [*as_user, server_bin, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={folder / 'sock'}", f"--pid-file={folder / 'pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
         *(setting.format(dir=folder) for setting in settings)],
        folder,
    )  # fmt: skip
    try:
        wait_listening(server, port, "MariaDB", folder)
        subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-e", "CREATE DATABASE test"], check=True)
        yield f"mysql://root@127.0.0.1:{port}/test"
    finally:
        stop_server(server, folder)
