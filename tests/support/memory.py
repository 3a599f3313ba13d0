"""What a message too large to read costs: this process's peak resident set, and the one inbound
dead letter it becomes (its start, marked with its size), for tests that prove it was not held whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resident_peak_reset() -> None:
    """Start this process's peak resident set (VmHWM) again from what it holds now."""
    Path("/proc/self/clear_refs").write_text("5")


def resident_peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


async def the_cut_letter(hub: Any, inbound: str, size: int, start: bytes) -> dict[str, bytes]:
    """The one letter on ``inbound``'s dead-letter topic: a message of ``size`` bytes parked from
    its first 64 KiB (``start`` and what follows it), marked never to be replayed; its headers."""
    from bus.kafka.reader import read_topic

    parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter(inbound))
    assert len(parked) == 1, parked
    headers = dict(parked[0].headers)
    assert headers["bus_error"] == f"a message of {size:,} bytes; at most 16,777,216 are read".encode(), headers
    assert headers["bus_truncated_from_bytes"] == str(size).encode()
    assert parked[0].value == (start + b"a" * 65536)[:65536]
    return headers
