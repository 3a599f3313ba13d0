"""Binaries the tests run: Prometheus and promtool (Debian's package, unpacked by `make test`
into .tools/, or already on PATH)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The path of a tool; skip with how to get it on a laptop, fail in CI."""
    unpacked = ROOT / ".tools" / "prometheus" / "usr" / "bin" / name
    found = str(unpacked) if unpacked.exists() else shutil.which(name)
    if found is None:
        message = f"{name} not found: `make test` unpacks Debian's prometheus package into .tools/ (or install it)"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every test", pytrace=False)
        pytest.skip(message)
    return found
