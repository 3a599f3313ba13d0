"""httpx clients as the hub makes them: through the proxies the environment names (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), except to loopback, which is always reached
directly, as Go's clients and the hub's own delivery client (adapters/http/wire.py) do.

httpx sends a call to ``127.0.0.1`` through the proxy unless ``NO_PROXY`` names it. A pod given
``HTTPS_PROXY`` for the outside world, or a laptop behind a corporate proxy, then sent the hub's
calls to itself through that proxy, which cannot reach the pod's or the laptop's loopback: the
embedded schema registry's client (on the hub's own ops port) failed at start, and ``bus
status --hub http://127.0.0.1:9090`` could not reach a local hub.
"""

from __future__ import annotations

__all__ = ["LOOPBACK_DIRECT", "async_client", "client"]

from typing import Any

import httpx

# Mount patterns with no transport: the client's own, direct one (a proxy's is mounted per scheme).
LOOPBACK_DIRECT: dict[str, None] = {"all://localhost": None, "all://127.0.0.1": None, "all://[::1]": None}


def async_client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(mounts=LOOPBACK_DIRECT, **options)


def client(**options: Any) -> httpx.Client:
    return httpx.Client(mounts=LOOPBACK_DIRECT, **options)
