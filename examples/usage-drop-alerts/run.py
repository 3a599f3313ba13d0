"""Run the recipe end to end on this machine: analytics events over MQTT -> usage per account
per window -> a support ticket when an account's usage falls by more than half, or stops.

    .venv/bin/python examples/usage-drop-alerts/run.py [--window 5]

Starts a support-desk stand-in and the hub (windows of `--window` seconds instead of an hour),
then plays three accounts' apps publishing to the local Mosquitto: in the first window each
sends 20 events; from the second on, "acme" sends 6 (a 70 % drop), "globex" 16 (20 %, under the
threshold) and "initech" nothing at all. It checks that exactly two tickets are opened (acme,
high; initech, urgent), one each, and that steady windows afterwards open none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict, wait_until  # noqa: E402
from examples.kit.zendesk import SupportDesk  # noqa: E402

FIRST_WINDOW = {"acme": 20, "globex": 20, "initech": 20}
LATER_WINDOWS = {"acme": 6, "globex": 16, "initech": 0}


@dataclass
class Report:
    tickets: list[dict[str, Any]] = field(default_factory=list)
    windows_played: int = 0
    published: int = 0
    hub_exit: int = -1

    def by_account(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for ticket in self.tickets:
            out.setdefault(ticket["external_id"].split(":")[1], []).append(ticket)
        return out

    def problems(self) -> list[str]:
        found = []
        got = {k: [t["priority"] for t in v] for k, v in self.by_account().items()}
        if got != {"acme": ["high"], "initech": ["urgent"]}:
            found.append(f"tickets by account {got}, expected acme: [high], initech: [urgent]")
        if self.windows_played < 4:
            found.append(f"only {self.windows_played} windows played: a steady window after the drop was not seen")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


async def play(root: str, window: float, report: Report) -> None:
    """Publish each window's events shortly after the window starts, window after window."""
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"app-{uuid.uuid4().hex[:8]}") as mqtt:
        while True:
            start = (time.time() // window + 1) * window
            await asyncio.sleep(start - time.time() + min(0.5, window / 10))
            plan = FIRST_WINDOW if report.windows_played == 0 else LATER_WINDOWS
            for account, events in plan.items():
                for _ in range(events):
                    body = {"id": uuid.uuid4().hex, "account": account, "event": "api_call", "quantity": 1, "ts": time.time()}
                    await mqtt.publish(f"{root}/{account}/events", json.dumps(body), qos=1)
                    report.published += 1
            report.windows_played += 1


async def run(window: float = 5, *, bootstrap: str | None = None, prefix: str = "usage", within: float = 120) -> Report:
    desk = await SupportDesk().start()
    root = f"analytics-{prefix}"
    hub = RecipeHub(
        HERE / "bus.yaml",
        {
            "USAGE_WINDOW": f"{window:g}s",
            "DROP_SHARE": "0.5",
            "MQTT_TOPIC_ROOT": root,
            "MQTT_CLIENT_ID": f"bus-usage-{prefix}",
            "SUPPORT_URL": desk.url,
            "ZENDESK_BASIC_AUTH": desk.basic,
        },
        bootstrap=bootstrap,
        prefix=prefix,
    )
    report = Report()
    player: asyncio.Task[None] | None = None
    try:
        await hub.start()
        player = asyncio.get_running_loop().create_task(play(root, window, report))
        await wait_until(lambda: len(desk.tickets) >= 2, within, "the two usage-drop tickets")
        # Two more windows of steady (lower) usage: they must open nothing more.
        played = report.windows_played
        await wait_until(lambda: report.windows_played >= played + 2, within, "two more windows")
        await asyncio.sleep(window * 0.6)  # past the end of the last full window, before the next one ends
    finally:
        if player is not None:
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
        report.hub_exit = await hub.stop()
        await desk.stop()
    report.tickets = desk.tickets
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=5, help="window length in seconds (production: 1h)")
    args = parser.parse_args()
    report = asyncio.run(run(args.window))
    print(f"\n  events published over MQTT  {report.published:5d}   in {report.windows_played} windows of {args.window:g}s")
    for ticket in report.tickets:
        print(f"  ticket #{ticket['id']} [{ticket['priority']}] {ticket['subject']}")
        print(f"      {ticket['comment']['body']}")
    return verdict(report.problems(), "one ticket per real drop, none for small dips or steady usage")


if __name__ == "__main__":
    sys.exit(main())
