"""Local TCP ports: one free to listen on, and whether another program listens on one.

Used by the embedded broker, the quickstart, the recipe kit, the tests and the benches, which all
start servers on ports they choose themselves.
"""

from __future__ import annotations

__all__ = ["free_port", "taken"]

import random
import socket
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_range()
_CHOICE = random.Random()  # noqa: S311 - spreads ports, not a secret


def taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another program holds ``port``. SO_REUSEADDR, as servers set it: a connection of
    ours that closed and lingers in TIME_WAIT does not count as taken."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and outside the kernel's ephemeral range.

    Why not bind port 0: the kernel answers with an ephemeral port, and between a server's stop
    and its restart on that port any outgoing connection on the machine may take it as its local
    port, so the restart fails to bind (seen once in twenty rolling restarts under a full test
    run). A port is still only free when chosen: whoever binds it later must expect to lose a race.
    """
    low, high = _EPHEMERAL
    first, last = (10_000, low - 1) if low > 11_000 else (high + 1, 65_535)
    for _ in range(200):
        port = _CHOICE.randint(first, last)
        if not taken(port, host):
            return port
    raise RuntimeError(f"no free port between {first} and {last} on {host}")
