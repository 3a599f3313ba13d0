"""Tools the tests run that pip does not install into the venv. `make test` puts them under
.tools/: Prometheus and promtool, PgBouncer and OpenSSH's sshd (Debian's packages, unpacked), checkov (a venv of its own: its
pins would fight ours), the CRD models and the AsyncAPI specification's JSON Schemas from npm. A test that needs one that is missing skips
with how to get it on a laptop, and fails in CI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
_PLACES = {
    "prometheus": TOOLS / "prometheus/usr/bin/prometheus",
    "promtool": TOOLS / "prometheus/usr/bin/promtool",
    "pgbouncer": TOOLS / "pgbouncer/usr/sbin/pgbouncer",
    "sshd": TOOLS / "openssh/usr/sbin/sshd",
    "checkov": TOOLS / "checkov/bin/checkov",
    "crd-models": TOOLS / "crd-models/node_modules",
    "asyncapi-specs": TOOLS / "asyncapi/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json",
    "node": None,
    "chromium": None,  # Debian's package: `make test` installs it with apt-get where it can
}


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}; CI must run every test", pytrace=False)
    pytest.skip(message)


def tool(name: str) -> str:
    """The path of a tool (a binary; for crd-models a node_modules folder; for asyncapi-specs the 3.0.0 JSON Schema)."""
    place = _PLACES[name]
    found = str(place) if place is not None and place.exists() else shutil.which(name)
    if found is None:
        where = "with apt-get (Debian's chromium package)" if name == "chromium" else "under .tools/"
        _missing(f"{name} not found: `make test` installs it {where}")
    assert found is not None
    return found
