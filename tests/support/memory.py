"""This process's peak resident set, for tests that prove a large input is not held whole."""

from __future__ import annotations

from pathlib import Path


def resident_peak_reset() -> None:
    """Start this process's peak resident set (VmHWM) again from what it holds now."""
    Path("/proc/self/clear_refs").write_text("5")


def resident_peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
