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

__all__ = ["LOOPBACK_DIRECT", "async_client", "client", "is_loopback", "proxy_options"]

import ipaddress
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from yarl import URL

# Mount patterns with no transport: the client's own, direct one (a proxy's is mounted per scheme).
LOOPBACK_DIRECT: dict[str, None] = {"all://localhost": None, "all://127.0.0.1": None, "all://[::1]": None}


def async_client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(mounts=LOOPBACK_DIRECT, **options)


def client(**options: Any) -> httpx.Client:
    return httpx.Client(mounts=LOOPBACK_DIRECT, **options)


def is_loopback(host: str) -> bool:
    """localhost, or an address on loopback (127.0.0.0/8, ::1): reached directly, never through a proxy."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxy_options(url: str) -> tuple[dict[str, Any], dict[str, str]]:
    """aiohttp's request options for the proxy the environment names for ``url``, and the headers
    to add to the request itself: none of either when it goes straight (``NO_PROXY`` names it, it
    is on loopback, or no proxy is named). The proxy's credentials (in its URL) go as
    ``Proxy-Authorization``: to the proxy's CONNECT for an https target, with the request itself
    for an http one, as aiohttp sends them. Read when called: call it once per target at an
    adapter's start. aiohttp's own ``trust_env`` has no loopback exception."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies_environment()
    named = proxies.get(parts.scheme) or proxies.get("all")
    where = f"{host}:{parts.port}" if parts.port else host
    if not named or is_loopback(host) or urllib.request.proxy_bypass_environment(where, proxies):  # type: ignore[attr-defined]
        return {}, {}
    proxy = URL(named if "://" in named else f"http://{named}")
    if not proxy.user:
        return {"proxy": str(proxy)}, {}
    credentials = {"Proxy-Authorization": aiohttp.encode_basic_auth(proxy.user, proxy.password or "")}
    if parts.scheme == "https":
        return {"proxy": str(proxy.with_user(None)), "proxy_headers": credentials}, {}
    return {"proxy": str(proxy.with_user(None))}, credentials
