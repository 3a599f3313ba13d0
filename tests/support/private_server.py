"""What the tests' private database servers share (tests/support/pg_logical.py,
tests/support/mariadb_private.py): skipping or failing when the binaries are missing, a folder
the server's own user owns, starting it with its output in a file there, waiting for its port, and
stopping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import IN_CI


def binaries_missing(message: str) -> NoReturn:
    """Skip the test on a laptop without the server's binaries; fail it in CI, which must run every test."""
    if IN_CI:
        pytest.fail(f"{message}; CI must run every test", pytrace=False)
    pytest.skip(message)


def server_folder(prefix: str, user: str) -> tuple[Path, list[str]]:
    """A temporary folder, and the command prefix that runs as ``user`` when the tests run as root
    (neither server runs as root); the folder is that user's then."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() != 0:
        return folder, []
    shutil.chown(folder, user)
    return folder, ["runuser", "-u", user, "--"]


def launch(command: list[str], folder: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a server whose output goes to ``folder/server.log``. Not to a pipe: nobody reads one while
    the tests run, and once it holds 64 KiB the server's next log line blocks it. A PostgreSQL that
    logged each logical-decoding peek did so mid-module: a first read that did not return for a
    minute, and a fast shutdown that could not finish (80 s at the module's end)."""
    with (folder / "server.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)


def _log_tail(server: subprocess.Popen[bytes], folder: Path) -> str:
    log = folder / "server.log"
    return log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else ""


def wait_listening(server: subprocess.Popen[bytes], port: int, what: str, folder: Path, *, timeout: float = 30) -> None:
    """Until ``server`` accepts connections on ``port``; RuntimeError with the end of its log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test's {what} did not start: {_log_tail(server, folder)}") from exc
            time.sleep(0.1)


def stop_server(server: subprocess.Popen[bytes], folder: Path) -> None:
    """Wait for ``server`` to end (asked to already, or terminated here), killing it after 20 s; remove its folder."""
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    shutil.rmtree(folder, ignore_errors=True)
