"""Which Kafka a command talks to (``bus dlq``, ``bus reconcile``, ``bus migrate cutover``)."""

from __future__ import annotations

__all__ = ["kafka_bootstrap"]

import argparse

from bus.config.models import HubConfig
from bus.errors import BusError


def kafka_bootstrap(args: argparse.Namespace, hub: HubConfig) -> str:
    """The Kafka a command uses: ``--bootstrap``; else, when the config says embedded, the one its
    running hub reports on the config's ops port (an embedded broker's port is known only to its
    hub); else the config's."""
    if args.bootstrap:
        return str(args.bootstrap)
    url = args.hub
    if url is None and hub.kafka.bootstrap != "embedded":
        return hub.kafka.bootstrap
    if url is None:
        if hub.ops.port == 0:
            raise BusError(
                "the config says embedded, and its ops.port is 0 (a free port picked at start): name the running hub with "
                "--hub http://HOST:OPS_PORT (its start-up log says the port), or its broker with --bootstrap HOST:PORT"
            )
        host = "127.0.0.1" if hub.ops.host in ("0.0.0.0", "::", "") else hub.ops.host  # noqa: S104 - listening everywhere: ask locally
        url = f"http://{host}:{hub.ops.port}"
    import httpx

    try:
        answer = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).json()
        return str(answer["kafka"]["bootstrap"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise BusError(
            f"cannot ask the hub at {url} for its Kafka address ({exc.__class__.__name__}: {exc}); is it running? "
            "Name it with --hub http://HOST:OPS_PORT, or the broker with --bootstrap HOST:PORT"
        ) from None
