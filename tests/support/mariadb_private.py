"""A MariaDB server of the test's own, for what the machine's shared server cannot be made to do
without disturbing the other tests: a legacy server's settings (``sql_mode=''``, the MySQL 5.6
era's default that many old applications still run with).

mariadb-install-db into a temporary folder (root without a password on loopback), then mariadbd
on a free port; it takes about a second. As root, the server runs as the ``mysql`` user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bus.ports import free_port
from tests.conftest import IN_CI


@contextmanager
def private_mariadb(*settings: str) -> Iterator[str]:
    """Yields the DSN (database ``test``) of a fresh server started with ``settings`` (mariadbd
    options: ``--sql-mode=``); stops and removes it after."""
    install, server_bin = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if install is None or not Path(server_bin).exists():
        message = "MariaDB server binaries (mariadb-install-db, mariadbd) are not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every test", pytrace=False)
        pytest.skip(message)
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="bus-mariadb-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "mysql", "--"]
        shutil.chown(folder, "mysql")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_user, install, f"--datadir={data}", "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*as_user, server_bin, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={folder / 'sock'}", f"--pid-file={folder / 'pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
         *settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = server.stderr.read().decode()[-2000:] if server.stderr else ""
                    raise RuntimeError(f"the test's MariaDB did not start: {log}") from exc
                time.sleep(0.1)
        subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-e", "CREATE DATABASE test"], check=True)
        yield f"mysql://root@127.0.0.1:{port}/test"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)
