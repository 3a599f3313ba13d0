"""``bus pause`` and ``bus resume``: steer a running hub from a terminal, through its management API.

    bus pause subscriber erp --hub URL --reason "ERP maintenance until 14:00"
    bus resume subscriber erp --hub URL
    bus pause inbound legacy-db --hub URL         its source is not read (a webhook answers 503)

The request is recorded on the hub's control topic and every process of the role obeys it within
seconds. The command then waits (``--wait``, default 15 s) until the process that answered the
call shows it obeyed, so a script that pauses a target before its maintenance knows the pause
holds before it goes on. Where that process does not run the role (the API served by a router
pod), there is nothing to watch there: it says so and trusts the record.

Exit codes: 0 asked and obeyed (or recorded, where it cannot be watched), 1 recorded but not
obeyed within the wait, 2 refused or not asked (no answer, no token, a read-only token, no such name).
"""

from __future__ import annotations

__all__ = ["steer"]

import argparse
import sys
import time
from typing import Any
from urllib.parse import quote

from bus.app.api_client import ApiClient, ApiRefused, token_from
from bus.app.commands import EXIT_CONFIG, EXIT_RUNTIME

# The role whose processes obey the request, by what it steers.
_ROLE = {"subscriber": "outbound", "inbound": "inbound"}
_POLL_S = 0.5


def _node(topology: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    nodes = topology["subscribers"] if kind == "subscriber" else topology["inbound"]
    return next((n for n in nodes if n["name"] == name), None)


def steer(args: argparse.Namespace) -> int:
    pausing = args.steer_command == "pause"
    kind, name = args.kind, args.name
    path = f"/{'subscribers' if kind == 'subscriber' else 'inbound'}/{quote(name, safe='')}/{args.steer_command}"
    try:
        client = ApiClient(args.hub, token_from(args.token_file), timeout=args.timeout)
        asked = client.post(path, {"reason": args.reason} if pausing and args.reason else None)
        what = f"{kind} {name}"
        why = f" ({asked['reason']})" if asked.get("reason") else ""
        print(f"asked by {asked['by']}: {args.steer_command} {what}{why}; every {_ROLE[kind]} process obeys within seconds")
        if args.wait <= 0:
            return 0
        deadline = time.monotonic() + args.wait
        while True:
            topology = client.get("/topology")
            if topology["role"] not in ("all", _ROLE[kind]):
                print(f"the process that answered runs the {topology['role']} role: it cannot show {what} obeying (see its own pods)")
                return 0
            node = _node(topology, kind, name)
            state = node["state"] if node is not None else "gone"
            if (state == "paused") == pausing:
                print(f"{what}: {state}" + (f" (by {node['paused_by']})" if node and node.get("paused_by") else ""))
                return 0
            if time.monotonic() >= deadline:
                print(
                    f"bus: {what} is still {state} after {args.wait:g} s: the request is recorded and will be obeyed, "
                    "but check `bus status` and the hub's log",
                    file=sys.stderr,
                )
                return EXIT_RUNTIME
            time.sleep(_POLL_S)
    except ApiRefused as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
