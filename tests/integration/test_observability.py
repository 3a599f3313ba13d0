"""A real Prometheus scrapes a running hub: every dashboard panel's query returns data, and the
numbers it reads are the hub's true counts."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY

from bus.app.hub import Hub
from bus.ports import free_port
from ops.grafana.dashboards import DASHBOARDS, panel_queries
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Call, Target
from tests.support.tools import tool
from tests.support.wait import until

pytestmark = pytest.mark.timeout(240)


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, ops_port: int) -> AsyncIterator[httpx.AsyncClient]:
    """Debian's Prometheus on loopback, scraping the hub's /metrics every second, as two releases
    in two namespaces would be scraped (the same hub twice, under two jobs and namespaces: the
    dashboards must keep them apart)."""
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{ops_port}"], "labels": {"namespace": namespace}}]}
            for job, namespace in RELEASES
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/-/ready")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "prometheus did not become ready"
                await asyncio.sleep(0.2)
            yield client
    finally:
        proc.terminate()
        await proc.wait()


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = (await client.get("/api/v1/query", params={"query": expr})).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return list(answer["data"]["result"])


RELEASES = [("bus-shop", "shop"), ("bus-billing", "billing")]  # (job, namespace)


def concrete(expr: str) -> list[str]:
    """The query as Grafana would send it for subscriber `erp`, every namespace, job and instance
    ("All"), once per adapter: `payments` (a webhook: events) and `drop` (a file inbound: read by
    one process at a time, so it has a lease). A panel must show data for one of them."""
    for variable in ("$namespace", "$job", "$instance"):
        expr = expr.replace(variable, ".*")
    expr = expr.replace("$__rate_interval", "30s").replace("$subscriber", "erp")
    return [expr.replace("$adapter", adapter) for adapter in ("payments", "drop")] if "$adapter" in expr else [expr]


async def send_traffic(hub: Hub, stop: asyncio.Event) -> None:
    assert hub.web is not None
    i = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
        assert (
            await client.post("/hooks/payments", content=b"{not json", headers={"Content-Type": "application/json"})
        ).status_code == 400  # a rejected one
        assert (await client.post("/hooks/paymnets", json=payment(0))).status_code == 404  # a sender with a typo in its URL
        while not stop.is_set():
            i += 1
            status = "failed" if i % 5 == 0 else "succeeded"
            assert (await client.post("/hooks/payments", json=payment(i, status=status))).status_code == 202
            await asyncio.sleep(0.1)


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path, bootstrap: str) -> None:
    seen: set[str] = set()

    def answer(call: Call) -> tuple[int, dict[str, str]]:
        key = call.headers["Idempotency-Key"]
        if key == "evt_1":
            return 422, {}  # refused for good: dead-lettered
        if key == "evt_2" and key not in seen:
            seen.add(key)
            return 503, {"Retry-After": "0"}  # retried once
        return 200, {}

    target = await Target(answer=answer).start()
    ops_port = free_port()
    config = payment_hub_config(bootstrap, target.url, ops_port=ops_port)
    config["inbound"].append(  # a source one process reads at a time: the adapter dashboard's lease panels
        {
            "name": "drop",
            "type": "file",
            "path": str(tmp_path / "drop"),
            "emit": {"schema": "Payment", "map": {"payment_id": "ref", "amount": "int(cents)", "currency": "cur"}},
        }
    )
    config["outbound"][0]["delivery"] = {
        "rate_limit": {"rate": 500, "burst": 10},
        "circuit_breaker": {"failure_ratio": 0.9, "min_calls": 50},
        "backoff_initial": "10ms",
    }
    path = write_config(tmp_path / "bus.yaml", config)
    stop = asyncio.Event()
    sample = REGISTRY.get_sample_value
    before = {
        "dead": sample("bus_deliveries_total", {"subscriber": "erp", "outcome": "dead_lettered"}) or 0.0,
        "retried": sample("bus_deliveries_total", {"subscriber": "erp", "outcome": "retried"}) or 0.0,
        "rejected": sample("bus_inbound_events_total", {"adapter": "payments", "outcome": "rejected"}) or 0.0,
    }
    try:
        async with build_hub(path) as hub, prometheus(tmp_path, ops_port) as prom:
            traffic = asyncio.create_task(send_traffic(hub, stop))
            try:
                await until(lambda: len(target.accepted) >= 10, "deliveries")
                queries = [
                    (f"{name}/{title}", concrete(expr)) for name, build in DASHBOARDS.items() for title, expr in panel_queries(build())
                ]
                # Two releases in two namespaces are two series in every panel, not one summed. The
                # two jobs are scraped on their own clocks, so a rate() can have its two samples in
                # one job a scrape before the other: wait for both, then hold every panel to it.
                releases = {(ns, job) for job, ns in RELEASES}

                async def scopes_of(expr: str) -> set[tuple[Any, Any]]:
                    return {(s["metric"].get("namespace"), s["metric"].get("job")) for s in await query(prom, expr)}

                async def short_of(where: str, exprs: list[str]) -> str | None:
                    seen = [await scopes_of(expr) for expr in exprs]
                    return None if releases in seen else f"{where}: {exprs[0]} -> {seen}"

                short: list[str] = []
                deadline = time.monotonic() + 60
                while True:
                    short = [said for where, exprs in queries if (said := await short_of(where, exprs))]
                    if not short or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                assert not short, "panels without data for both releases:\n" + "\n".join(short)
                # The numbers are the hub's own, not just present. (Counters live as long as the
                # process, and earlier tests in it used the same names: compare with the baseline.)
                expected = {
                    'bus_deliveries_total{subscriber="erp",outcome="dead_lettered"}': before["dead"] + 1,
                    'bus_deliveries_total{subscriber="erp",outcome="retried"}': before["retried"] + 1,
                    'bus_inbound_events_total{adapter="payments",outcome="rejected"}': before["rejected"] + 1,
                    'bus_dead_letters{subscriber="erp"}': 1,  # this hub's own DLQ topic, probed every 5 s
                }

                async def read() -> dict[str, float]:
                    return {q: float((await query(prom, f"max({q})"))[0]["value"][1]) for q in expected}

                deadline = time.monotonic() + 30
                while (seen := await read()) != expected and time.monotonic() < deadline:
                    await asyncio.sleep(1)
                assert seen == expected
            finally:
                stop.set()
                await traffic
            async with httpx.AsyncClient() as client:
                metrics_page = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
    finally:
        await target.stop()
    conventions(metrics_page)


ALLOWED_LABELS = {
    "adapter", "outcome", "route", "schema", "subscriber", "group", "topic", "partition", "state", "le", "version", "role", "component",
    "migration",  # a migration's name in the config (bus_migration_rows_total)
    "connection",  # an OAuth2 connection's name in the config (bus_connection_state)
    "operation",  # a Kafka request kind that failed in the hub (bus_kafka_errors_total): produce, commit, ledger, dead_letter
    "server", "reason",  # the webhook server and one of five fixed refusals (bus_http_refused_total)
    "change",  # gained, lost or handed_over, a source's lease (bus_inbound_lease_changes_total)
    "kind",  # undelivered or dead_letters, on a removed subscriber's topics (bus_stranded_events)
}  # fmt: skip


def conventions(page: str) -> None:
    """Prometheus naming: one bus_ prefix, counters end in _total, base units, bounded labels."""
    types = dict(re.findall(r"^# TYPE (bus_\w+) (\w+)$", page, re.M))
    assert len(types) >= 15, types
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
        assert not re.search(r"_(ms|milliseconds|minutes|kb|mb)(_|$)", name), f"{name}: use base units (seconds, bytes)"
    assert not re.search(r"^bus_\w+_created\b", page, re.M), "no _created series: nothing reads them"
    for labels in re.findall(r"^bus_\w+\{([^}]*)\}", page, re.M):
        names = set(re.findall(r'(\w+)="', labels))
        assert names <= ALLOWED_LABELS, f"unexpected label(s) {names - ALLOWED_LABELS}: event values must never become labels"
