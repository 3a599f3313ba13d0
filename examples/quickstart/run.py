"""Quickstart: the hub on its embedded broker, a sample source posting payments, sample targets.

    make quickstart            (or: .venv/bin/python examples/quickstart/run.py --events 500)

With ``--image IMAGE`` the hub runs from the container image instead (built from the project's
Dockerfile), on the host's network, with this folder mounted as /etc/bus; ``--engine`` names the
container command (docker by default; ``podman`` or ``podman --runtime runc`` work the same)
and ``--run-args`` adds options to its ``run`` (limits, a user namespace).

1. starts two sample targets (an "ERP" and a "support desk") on a local HTTP server;
2. starts ``bus run -c examples/quickstart/bus.yaml`` as a separate process (embedded Kafka);
3. posts payment webhooks like a payment provider would, plus two bad ones to show the errors;
4. waits until every event that should arrive has arrived, then prints what was sent, routed
   and delivered, and stops the hub with SIGTERM (a graceful stop). With ``--keep`` the hub
   stays up until Ctrl-C, to look around in its web console (the address and token are printed).

Exit code 0 when every expected event arrived exactly as routed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bus.ports import free_port

HERE = Path(__file__).resolve().parent
API_KEY = "quickstart-key"


class SampleTargets:
    """Stands in for an ERP and a support desk: records every call it accepts."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[str, dict[str, Any]]]] = {"erp": [], "support": []}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _record(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        self.received[target].append((request.headers.get("Idempotency-Key", ""), await request.json()))
        return web.json_response({"ok": True}, status=201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{target:erp|support}/{rest:.*}", self._record)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def sample_payments(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    payments = []
    for i in range(count):
        payments.append(
            {
                "id": f"evt_{i:06d}",
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {
                        "id": f"pi_{i:06d}",
                        "amount": rng.choice([500, 4_200, 99_999, 100_000, 250_000, 1_200_000]),
                        "currency": rng.choice(["USD", "usd", "eur"]),
                        "customer": f"cus_{rng.randint(1, 40):03d}",
                        "status": rng.choice(["succeeded", "succeeded", "succeeded", "failed"]),
                        "description": "Order #%d" % (1000 + i),
                    }
                },
            }
        )
    return payments


def expected(payments: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The same rules as bus.yaml's routes, written out plainly to check the hub against."""
    erp, support = set(), set()
    for p in payments:
        o = p["data"]["object"]
        if o["amount"] >= 100_000 and o["currency"].lower() == "usd" and o["status"] == "succeeded":
            erp.add(o["id"])
        if o["status"] == "failed":
            support.add(o["id"])
    return {"erp": erp, "support": support}


async def wait_ready(client: httpx.AsyncClient, url: str, hub: asyncio.subprocess.Process, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if hub.returncode is not None:
            raise SystemExit(f"the hub exited early with code {hub.returncode}")
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the hub was not ready within {within:.0f}s ({url})")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300, help="payment webhooks to post (default 300)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for delivery")
    parser.add_argument("--image", help="run the hub from this container image instead of this environment's bus")
    parser.add_argument("--engine", default="docker", help="container command for --image (default docker)")
    parser.add_argument("--run-args", default="", help="more options for the engine's run, such as --ulimit nofile=4096:4096")
    parser.add_argument("--keep", action="store_true", help="keep the hub running after the summary, until Ctrl-C (to use the console)")
    args = parser.parse_args()

    targets = SampleTargets()
    await targets.start()
    webhook_port, ops_port = free_port(), free_port()
    console_token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "WEBHOOK_PORT": str(webhook_port),
        "OPS_PORT": str(ops_port),
        "ERP_URL": f"http://127.0.0.1:{targets.port}/erp/payments",
        "SUPPORT_URL": f"http://127.0.0.1:{targets.port}/support/tickets",
        "PAYMENTS_API_KEY": API_KEY,
        "BUS_OPS_TOKEN": console_token,
    }
    if args.image:
        # The settings go in as the container's environment. The hub is the container's PID 1, as
        # in a pod; the engine passes our SIGTERM on to it, as the kubelet's stop would.
        names = ("WEBHOOK_PORT", "OPS_PORT", "ERP_URL", "SUPPORT_URL", "PAYMENTS_API_KEY", "BUS_OPS_TOKEN")
        settings = [f"--env={k}={env[k]}" for k in names]
        command = [*shlex.split(args.engine), "run", "--rm", "--network=host", f"--volume={HERE}:/etc/bus:ro", *settings]
        command += [*shlex.split(args.run_args), args.image]
        command += ["run", "-c", "/etc/bus/bus.yaml"]
        print(f"starting the hub from the image {args.image}: {shlex.join(command[:2])} ... run -c /etc/bus/bus.yaml")
    else:
        bus = Path(sys.executable).with_name("bus")
        command = [str(bus), "run", "-c", str(HERE / "bus.yaml")]
        print(f"starting the hub: {bus.name} run -c {HERE.relative_to(Path.cwd()) if HERE.is_relative_to(Path.cwd()) else HERE}/bus.yaml")
    hub = await asyncio.create_subprocess_exec(*command, env=env)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await wait_ready(client, f"http://127.0.0.1:{ops_port}/readyz", hub, 90)
            print(f"hub ready in {time.monotonic() - started:.1f}s; posting {args.events} payment webhooks")
            console = f"http://127.0.0.1:{ops_port}/console/"
            page = await client.get(console)
            topology = await client.get(
                f"http://127.0.0.1:{ops_port}/api/v1/topology", headers={"Authorization": f"Bearer {console_token}"}
            )
            console_ok = page.status_code == 200 and topology.status_code == 200
            print(
                f"web console: {console}  (sign in with the token {console_token}; answers: {page.status_code}, API {topology.status_code})"
            )
            payments = sample_payments(args.events)
            url = f"http://127.0.0.1:{webhook_port}/hooks/payments"
            sem = asyncio.Semaphore(32)

            async def post(p: dict[str, Any]) -> int:
                async with sem:
                    r = await client.post(url, json=p, headers={"X-API-Key": API_KEY})
                    return r.status_code

            t0 = time.monotonic()
            codes = await asyncio.gather(*(post(p) for p in payments))
            post_s = time.monotonic() - t0
            bad_json = await client.post(url, content=b"{not json", headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
            bad_key = await client.post(url, json=payments[0], headers={"X-API-Key": "wrong"})
            want = expected(payments)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                if all(len(targets.received[t]) >= len(ids) for t, ids in want.items()):
                    break
                await asyncio.sleep(0.2)
            metrics = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
            if args.keep:
                print(f"\nthe hub keeps running: web console at {console} (token {console_token}); Ctrl-C stops it")
                with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
                    await hub.wait()
    finally:
        if hub.returncode is None:
            hub.send_signal(signal.SIGTERM)
        rc = await hub.wait()
        await targets.stop()

    got = {
        t: {body.get("external_id") or re.sub(r"^Payment (\S+) failed$", r"\1", body.get("title", "")) for _, body in calls}
        for t, calls in targets.received.items()
    }
    keys = [k for calls in targets.received.values() for k, _ in calls]
    accepted = sum(1 for c in codes if c == 202)
    print()
    print("  sent to the webhook           %6d   (%d accepted with 202 in %.2fs)" % (len(payments), accepted, post_s))
    print("  bad JSON                      %6s   -> %d %s" % ("1", bad_json.status_code, bad_json.json()["error"][:50]))
    print("  wrong API key                 %6s   -> %d" % ("1", bad_key.status_code))
    for route in ("large-usd-payments-to-erp", "failed-payments-to-support"):
        print("  routed by %-28s %4d" % (route, metric(metrics, "bus_routed_events_total", route=route, outcome="matched")))
    print("  matched no route              %6d" % metric(metrics, "bus_router_unmatched_events_total"))
    for target, ids in want.items():
        print(
            "  delivered to %-16s %6d   (expected %d, idempotency keys unique: %s)"
            % (target, len(targets.received[target]), len(ids), len(set(keys)) == len(keys))
        )
    print("  hub stopped with exit code    %6d" % rc)
    print("  web console                   %6s   (%s)" % ("ok" if console_ok else "FAILED", console))
    ok = accepted == len(payments) and all(got[t] == ids for t, ids in want.items()) and rc == 0 and console_ok
    print("\nquickstart", "OK: every routed event arrived" if ok else "FAILED: see the counts above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
