"""``bus status``: a running hub's topology and each part's state, through the management API.

    bus status --hub http://127.0.0.1:9090            one table (token from $BUS_OPS_TOKEN)
    bus status --hub URL --watch 5                     again every 5 s, until Ctrl-C
    bus status --hub URL --json                        the API's answer as it is

Exit code: 0 when every part is running or healthy, 1 when one is not (a paused subscriber or source
counts as not), 2 when the hub cannot be asked (no answer, no token, a refused token).
"""

from __future__ import annotations

__all__ = ["status"]

import argparse
import json
import sys
import time
from typing import Any

from bus.app.api_client import ApiClient, ApiRefused, token_from
from bus.app.commands import EXIT_CONFIG, EXIT_RUNTIME

_FINE = {"running", "standby", "healthy", "not_running_here"}


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows])


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(topology: dict[str, Any]) -> str:
    """The topology as three tables: inbound, routes, subscribers."""
    inbound = [[n["name"], n["type"], n["state"], n.get("topic") or "", n.get("detail") or ""] for n in topology["inbound"]]
    routes = [
        [
            r["name"],
            r["from"],
            ", ".join(r["to"]),
            str(r["matched"]),
            str(r["emitted"]),
            str(r["dropped"]),
            str(r["failed"]),
            _rate(r.get("rate_in")),
            _rate(r.get("rate_out")),
        ]
        for r in topology["routes"]
    ]
    subscribers = [
        [
            s["name"],
            s["type"],
            s["state"] + (f" (by {s['paused_by']})" if s.get("paused_by") else ""),
            str(s["failing_events"]),
            str(s["held_keys"]),
            _rate(s.get("rate_out")),
            (s.get("paused_reason") or s.get("last_error") or "")[:80],
        ]
        for s in topology["subscribers"]
    ]
    return "\n\n".join(
        [
            f"role: {topology['role']}",
            _table(inbound, ["INBOUND", "TYPE", "STATE", "TOPIC", "DETAIL"]) if inbound else "no inbound adapters here",
            _table(routes, ["ROUTE", "FROM", "TO", "MATCHED", "EMITTED", "DROPPED", "FAILED", "IN/S", "OUT/S"]) if routes else "no routes",
            _table(subscribers, ["SUBSCRIBER", "TYPE", "STATE", "FAILING", "HELD KEYS", "DELIVERED/S", "LAST ERROR OR WHY PAUSED"])
            if subscribers
            else "no subscribers",
        ]
    )


def healthy(topology: dict[str, Any]) -> bool:
    return all(n["state"] in _FINE for n in [*topology["inbound"], *topology["subscribers"]])


def status(args: argparse.Namespace) -> int:
    try:
        client = ApiClient(args.hub, token_from(args.token_file), timeout=args.timeout)
        while True:
            topology = client.get("/topology")
            if args.json:
                print(json.dumps(topology, indent=2))
            else:
                if args.watch:
                    print("\033[2J\033[H", end="")  # clear the terminal between rounds
                print(render(topology), flush=True)
            if not args.watch:
                return 0 if healthy(topology) else EXIT_RUNTIME
            time.sleep(args.watch)
    except ApiRefused as exc:  # no token, no answer, a refusal: the hub cannot be asked
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
