"""The web console (/console/ on the ops port) in a real browser: Debian's chromium, driven by
Playwright. A hub with a failing subscriber: the topology marks it; its page lists its dead
letters; once the target recovers they are replayed from the page (a dry run first) and each
arrives at the target exactly once. Another test finds an event by id and by key and sees every
hop of its lineage. Screenshots of each page are written to test-artifacts/console/ (and kept:
they are how a person checks what the page looks like)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.faults.test_delivery_faults import hub_config, post_all
from tests.integration.test_redelivery import settled
from tests.support.hub import build_hub, ready_within, write_config
from tests.support.target import Target
from tests.support.tools import ROOT, tool

TOKEN = "console-admin-token"
# A key in which no other test's secret can appear: the hub masks every secret it knows wherever
# it appears in an answer, and tests in one process share what is known ("acme" is one, in
# another test: the key "acme-corp" was shown as "***-corp").
ACME = "k7f3e9cw2x"
SHOTS = ROOT / "test-artifacts" / "console"
# What the page shows comes from API calls that read Kafka: on a loaded machine (the whole suite on
# two cores) one took longer than expect()'s default 5 s, and a page that was right failed.
expect.set_options(timeout=20_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = tool("chromium")
    async with async_playwright() as playwright:
        found = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield found
        finally:
            await found.close()


async def signed_in(
    browser: Browser, ops_port: int, *, slow_topology_s: float = 0, timezone_id: str | None = None, token: str = TOKEN
) -> Page:
    page = await browser.new_page(viewport={"width": 1366, "height": 800}, timezone_id=timezone_id)  # a laptop screen
    if slow_topology_s:  # a hub slow to answer (a loaded machine): its answer comes after the operator moved on

        async def late(route: Any) -> None:
            await asyncio.sleep(slow_topology_s)
            await route.continue_()

        await page.route("**/api/v1/topology", late)
    await page.goto(f"http://127.0.0.1:{ops_port}/console/")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    return page


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_a_failing_subscriber_is_marked_and_its_dead_letters_replayed_once(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    refusing = {"on": True}
    good = await Target().start()
    bad = await Target(answer=lambda call: (503, {}) if refusing["on"] else (200, {})).start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{good.url}/erp"}, "crm": {"url": f"{bad.url}/crm"}})
        # Retried for 8 s (the topology shows it retrying meanwhile), then dead-lettered.
        config["outbound"][1]["delivery"] = {"max_age": "8s", "backoff_initial": "100ms", "backoff_max": "500ms", "circuit_breaker": None}
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port)
            await post_all(hub, [{"id": f"o-{i}", "key": f"k{i % 4}", "seq": i} for i in range(6)])

            crm = page.locator('[data-subscriber="crm"]')
            await expect(crm).to_have_attribute("data-state", "retrying", timeout=20_000)
            await expect(crm).to_have_attribute("data-attention", "yes")
            await expect(page.locator('[data-subscriber="erp"]')).to_have_attribute("data-attention", "no")
            await expect(page.locator("#attention")).to_contain_text("crm")
            await shot(page, "topology-failing")

            # Keyboard: the subscriber's node is a link; Enter opens its page.
            await crm.focus()
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("heading", name="Subscriber crm")).to_be_visible()
            await expect(page.locator("#letters tbody tr")).to_have_count(6, timeout=30_000)
            await expect(page.locator("#letters")).to_contain_text("503")
            await shot(page, "subscriber-dead-letters")

            refusing["on"] = False
            await page.get_by_role("button", name="Replay all…").click()
            await expect(page.locator(".confirm")).to_contain_text("6 dead letter(s) would be replayed")
            assert not bad.accepted, "a dry run sent something"
            await page.get_by_role("button", name="Yes, replay").click()
            # A replay reads the dead-letter topic and the subscriber's partitions: seconds on a loaded machine.
            await expect(page.locator("#status")).to_contain_text("Replayed 6 dead letter(s)", timeout=30_000)
            await good.wait_for(lambda: len(good.accepted) == 6)
            await bad.wait_for(lambda: len(bad.accepted) == 6)
            await expect(page.locator("#no-letters")).to_be_visible(timeout=15_000)
            await asyncio.sleep(1)  # anything sent twice would arrive now
            arrived = Counter(call.body["payment_id"] for call in bad.accepted)
            assert arrived == {f"o-{i}": 1 for i in range(6)}

            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/")
            await expect(page.locator('[data-subscriber="crm"]')).to_have_attribute("data-attention", "no", timeout=20_000)
            await shot(page, "topology")
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/config")
            await expect(page.locator("#config")).to_contain_text('"crm"')
            assert TOKEN not in await page.locator("#config").inner_text()
            await shot(page, "config")
    finally:
        await good.stop()
        await bad.stop()


async def test_a_replay_that_would_put_older_data_over_newer_says_so(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """s-1 is refused; s-2, a later event of its key, is delivered. "Replay all" sends back s-3 (no
    later event of its key) and leaves s-1 out, saying why and naming s-2: replayed, s-1 would
    have put its older data over s-2's at the target. A button then replays it anyway."""
    refusing = {"on": True}
    crm = await Target(answer=lambda c: (400, {}) if refusing["on"] and c.body["payment_id"] in ("s-1", "s-3") else (200, {})).start()
    try:
        config = hub_config(bootstrap, {"crm": {"url": f"{crm.url}/crm"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_all(hub, [{"id": "s-1", "key": "kA", "seq": 1}, {"id": "s-3", "key": "kB", "seq": 3}])
            page = await signed_in(browser, hub.ops.port)
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/subscriber/crm")
            await expect(page.locator("#letters tbody tr")).to_have_count(2, timeout=30_000)
            await post_all(hub, [{"id": "s-2", "key": "kA", "seq": 2}])
            await crm.wait_for(lambda: [c.body["payment_id"] for c in crm.accepted] == ["s-2"])

            refusing["on"] = False
            await page.get_by_role("button", name="Replay all…").click()
            await page.get_by_role("button", name="Yes, replay").click()
            status = page.locator("#status")
            await expect(status).to_contain_text(
                "Replayed 1 dead letter(s). 1 not replayed: a later event of the same key came after each", timeout=30_000
            )
            await expect(status).to_contain_text("s-1 (after it: s-2)")
            await shot(page, "subscriber-replay-superseded")
            await crm.wait_for(lambda: [c.body["payment_id"] for c in crm.accepted] == ["s-2", "s-3"])

            # The operator knows this target keeps every event: sent anyway, from the console.
            await page.get_by_role("button", name="Replay the 1 left out anyway…").click()
            await expect(page.locator(".confirm")).to_contain_text("1 dead letter(s) would be replayed")
            await page.get_by_role("button", name="Yes, replay").click()
            await expect(status).to_contain_text("Replayed 1 dead letter(s).", timeout=30_000)
            await crm.wait_for(lambda: [c.body["payment_id"] for c in crm.accepted] == ["s-2", "s-3", "s-1"])
            await expect(page.locator("#no-letters")).to_be_visible(timeout=15_000)
    finally:
        await crm.stop()


async def test_an_event_is_found_by_id_and_by_key_with_every_hop(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    good = await Target().start()
    bad = await Target(answer=lambda call: (400, {}) if call.body["payment_id"] == "x-2" else (200, {})).start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{good.url}/erp"}, "crm": {"url": f"{bad.url}/crm"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_all(hub, [{"id": f"x-{i}", "key": ACME if i == 2 else f"k{i}", "seq": i} for i in range(4)])
            await good.wait_for(lambda: len(good.accepted) == 4)
            page = await signed_in(browser, hub.ops.port, slow_topology_s=1.5)
            await page.get_by_role("link", name="Event search").click()  # before the topology's first answer came back
            await page.wait_for_timeout(2500)  # past that answer and a refresh: neither may draw over this page
            await expect(page.get_by_role("heading", name="Event search")).to_be_visible()
            await expect(page.get_by_role("heading", name="Topology")).to_have_count(0)
            await page.get_by_label("Event id, key or subject").fill("x-2")
            await page.get_by_role("button", name="Find").click()
            await expect(page.get_by_role("heading", name="Event x-2")).to_be_visible(timeout=20_000)

            async def every_hop(found: Any) -> None:
                await expect(found.locator('#now [data-subscriber="erp"]')).to_have_attribute("data-state", "delivered", timeout=20_000)
                await expect(found.locator('#now [data-subscriber="crm"]')).to_have_attribute("data-state", "dead_lettered")

            for _ in range(20):  # settled and recorded within a flush or two: reload until both are
                if await page.locator('#now [data-state="dead_lettered"]').count():
                    break
                await asyncio.sleep(0.5)
                await page.reload()
            await every_hop(page)
            await expect(page.locator("#entered")).to_contain_text(ACME)
            await expect(page.locator("#entered")).to_contain_text(hub.topics.canonical("Payment"))
            await expect(page.locator("#routed tbody tr")).to_have_count(2)
            await expect(page.locator('#deliveries [data-subscriber="crm"]')).to_contain_text("400")
            await expect(page.locator('#deliveries [data-subscriber="erp"]')).to_have_attribute("data-outcome", "delivered")
            await expect(page.locator("#dead-letters")).to_contain_text("crm")
            await shot(page, "event-lineage")

            # By the key the inbound recorded: one event has it, so its lineage opens.
            await page.get_by_role("link", name="← Event search").click()
            await page.get_by_label("Event id, key or subject").fill(ACME)
            await page.get_by_role("button", name="Find").click()
            await expect(page.locator("#results")).to_contain_text("x-2")
            await page.get_by_role("link", name="x-2").click()
            await every_hop(page)
    finally:
        await good.stop()
        await bad.stop()


async def test_the_topology_of_a_hub_with_200_routes_draws_every_part(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    target = await Target().start()
    try:
        subscribers = {f"s{i:02d}": {"url": f"{target.url}/s{i}"} for i in range(20)}
        config = hub_config(bootstrap, subscribers)
        config["routes"] = [{"name": f"r{i:03d}", "from": "Payment", "when": f"amount > {i}", "to": [f"s{i % 20:02d}"]} for i in range(200)]
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port)
            await expect(page.locator(".n-route")).to_have_count(200, timeout=20_000)
            await expect(page.locator("[data-subscriber]")).to_have_count(20)
            # Redrawn every 2 s: how long one draw takes in the browser, for the record (not asserted: shared machines).
            took = await page.evaluate(
                """async () => { const t = performance.now(); await window.busConsoleRedraw(); return performance.now() - t; }"""
            )
            print(f"topology of 200 routes and 20 subscribers: one refresh (API call and draw) took {took:.0f} ms")
            await shot(page, "topology-200-routes")
    finally:
        await target.stop()


async def test_migration_runs_are_listed_and_a_report_opens_styled(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """The Migrations page lists the runs of the state folder beside the hub's config, and opens a
    run's report (fetched with the token) in a page of its own, its stylesheet allowed by the CSP."""
    from bus.app.migrate.run import RunOptions, run_migration
    from tests.support.hub import load, unique_prefix

    lines = [{"ref": f"M-{i}", "cents": None if i == 3 else i * 100, "currency": "eur"} for i in range(12)]
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0, "tokens": [{"name": "admin", "token": TOKEN}]},
        "routes": [{"name": "all", "from": "Payment", "to": ["archive"]}],
        "outbound": [{"name": "archive", "type": "file", "path": str(tmp_path / "archive")}],
        "migrations": [
            {
                "name": "old-payments",
                "source": {"file": {"path": "export.jsonl"}},
                "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": "currency"}},
            }
        ],
    }
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, registry, catalog = load(path)
    run = await run_migration(loaded, catalog, "old-payments", base_dir=tmp_path, state_dir=tmp_path / ".bus-migrate",
                              registry=registry, options=RunOptions(without_rollback=True))  # fmt: skip
    async with build_hub(path) as hub:
        page = await signed_in(browser, hub.ops.port)
        await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/migrations")
        row = page.locator("#migrations tbody tr")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text(run.id)
        await expect(row).to_contain_text("finished")
        await expect(row.locator("td").nth(8)).to_have_text("1")  # the row without an amount was refused
        await shot(page, "migrations")
        async with page.context.expect_page() as opened:
            await page.get_by_role("button", name="Open report").click()
        report = await opened.value
        await report.wait_for_load_state()
        await expect(report.locator("#status")).to_have_text("finished")
        await expect(report.locator("#refusals")).to_contain_text("amount")
        # Styled: the report's stylesheet ran under the console's policy (h1 is 1.5rem there, 2em unstyled).
        assert await report.evaluate("getComputedStyle(document.querySelector('h1')).fontSize") == "24px"
        await shot(report, "migration-report")


async def test_an_inbound_that_needs_attention_while_it_runs_is_listed(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """A sql_poll with rows its watermark cannot reach keeps running (the rest of the table flows),
    so it was never marked: the topology now lists it under "need attention", amber, with why."""
    from tests.integration.test_sql import DATABASES, run_sql
    from tests.integration.test_sql_poll import hub_config as poll_config
    from tests.integration.test_sql_poll import insert_rows, table_in

    dsn = DATABASES["postgresql"][2]
    async with table_in("postgresql") as table:
        await run_sql("postgresql", dsn, f"ALTER TABLE {table} ALTER COLUMN updated_at DROP NOT NULL")
        await run_sql("postgresql", dsn, insert_rows(table, range(1, 4), lambda i: "2020-01-01 00:00:00"))
        await run_sql("postgresql", dsn, f"UPDATE {table} SET updated_at = NULL WHERE id = 2")
        config = poll_config(bootstrap, dsn, table, stray_check="300ms")
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port)
            legacy = page.locator('[data-inbound="legacy"]')
            await expect(legacy).to_have_attribute("data-attention", "yes", timeout=20_000)
            await expect(legacy).to_contain_text("running · needs attention")
            await expect(page.locator("#attention")).to_contain_text("inbound legacy: 1 row(s) with updated_at NULL are never read (id 2)")
            await shot(page, "topology-inbound-attention")

            await run_sql("postgresql", dsn, f"UPDATE {table} SET updated_at = '2021-01-01' WHERE id = 2")
            await expect(legacy).to_have_attribute("data-attention", "no", timeout=20_000)
            await expect(page.locator("#attention")).to_contain_text("all parts healthy")


async def test_a_source_another_replica_reads_is_shown_standing_by_not_failing(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """Two inbound replicas with one poller: the console of the one that stands by shows the
    poller as standby (grey, with why on hover), not as a part that needs attention."""
    from tests.integration.test_leases import poll_config
    from tests.support.crm import CrmApi
    from tests.support.hub import unique_prefix
    from tests.support.wait import until

    api = await CrmApi().start()
    api.add("c000", "2026-01-01T00:00:00Z")
    config = poll_config(bootstrap, api, unique_prefix())
    config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path, role="inbound") as first, build_hub(path, role="inbound") as second:
            await until(lambda: any(getattr(h.inbound[0], "standing_by", False) for h in (first, second)), "a standby")
            standby = first if getattr(first.inbound[0], "standing_by", False) else second
            page = await signed_in(browser, standby.ops.port)
            contacts = page.locator('[data-inbound="contacts"]')
            await expect(contacts).to_have_attribute("data-state", "standby", timeout=20_000)
            await expect(contacts).to_have_attribute("data-attention", "no")
            await expect(contacts).to_contain_text("standby")
            await expect(contacts.locator("title")).to_contain_text("another hub process reads the source")
            await expect(page.locator("#attention")).to_contain_text("all parts healthy")
            await shot(page, "topology-inbound-standby")
    finally:
        await api.stop()


async def test_a_source_is_paused_and_resumed_from_its_page(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """The inbound node opens the adapter's page; Pause stops the webhook taking requests (503),
    the topology shows it paused by the token's name under "need attention", Resume takes them again."""
    import httpx

    target = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{target.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            page = await signed_in(browser, hub.ops.port)
            source = page.locator('[data-inbound="in"]')
            await expect(source).to_have_attribute("data-state", "running", timeout=20_000)
            await source.focus()
            await page.keyboard.press("Enter")  # keyboard: the node is a link
            await expect(page.get_by_role("heading", name="Inbound in")).to_be_visible()
            reason = page.get_by_label("Reason (optional)")
            await reason.fill("partner resends old orders, OPS-42")
            await page.wait_for_timeout(3_000)  # the page redraws every 2 s (POLL_MS): what was typed stays
            await expect(reason).to_have_value("partner resends old orders, OPS-42")
            await page.get_by_role("button", name="Pause reading").click()
            await expect(page.locator("#status")).to_contain_text("Paused in")
            await expect(page.locator("#inbound-detail")).to_contain_text(
                "paused by admin (partner resends old orders, OPS-42)", timeout=10_000
            )
            await expect(page.locator("#paused-by")).to_contain_text("admin at 20")
            await expect(page.locator("#paused-by")).to_contain_text(": partner resends old orders, OPS-42")
            await shot(page, "inbound-paused")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as web:
                refused = await web.post("/in", json={"id": "p1", "key": "k", "seq": 1})
                assert refused.status_code == 503 and "Retry-After" in refused.headers

                await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/")
                await expect(source).to_have_attribute("data-state", "paused", timeout=20_000)
                await expect(source).to_have_attribute("data-attention", "yes")
                await expect(page.locator("#attention")).to_contain_text("paused by admin")
                await shot(page, "topology-inbound-paused")

                await page.locator("#attention a", has_text="in").click()
                await page.get_by_role("button", name="Resume reading").click()
                await expect(page.locator("#status")).to_contain_text("Resumed in")
                await expect(page.get_by_role("button", name="Pause reading")).to_be_visible(timeout=10_000)
                assert (await web.post("/in", json={"id": "p1", "key": "k", "seq": 1})).status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1)
    finally:
        await target.stop()


async def test_a_subscriber_is_paused_with_a_reason_and_resumed_from_its_page(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """Pause deliveries with a reason: the page says who, when and why, the topology lists it under
    "need attention" with the reason, events wait; Resume delivers them."""
    target = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{target.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port)
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/subscriber/erp")
            await page.get_by_label("Reason (optional)").fill("ERP upgrade until 14:00")
            await page.get_by_role("button", name="Pause deliveries").click()
            await expect(page.locator("#status")).to_contain_text("Paused erp")
            await expect(page.get_by_role("button", name="Resume deliveries")).to_be_visible(timeout=10_000)
            await expect(page.locator("#paused-by")).to_contain_text("admin at 20")
            await expect(page.locator("#paused-by")).to_contain_text(": ERP upgrade until 14:00")
            await shot(page, "subscriber-paused")
            await post_all(hub, [{"id": "w1", "key": "k", "seq": 1}])

            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/")
            await expect(page.locator('[data-subscriber="erp"]')).to_have_attribute("data-state", "paused", timeout=20_000)
            await expect(page.locator("#attention")).to_contain_text("by admin at")
            await expect(page.locator("#attention")).to_contain_text("ERP upgrade until 14:00")
            await shot(page, "topology-subscriber-paused")
            assert target.accepted == [], "nothing delivered while paused"

            await page.locator("#attention a", has_text="erp").click()
            await page.get_by_role("button", name="Resume deliveries").click()
            await expect(page.locator("#status")).to_contain_text("Resumed erp")
            await target.wait_for(lambda: len(target.accepted) == 1)
    finally:
        await target.stop()


async def test_a_target_that_lost_what_it_got_is_sent_it_again_from_its_page(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """An operator in Berlin types when the ERP's backup was taken, in their own time: a dry run
    says what would be sent, and "Yes" sends the events delivered since then again, and only them."""
    target = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{target.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_all(hub, [{"id": f"before-{i}", "key": f"k{i}", "seq": i} for i in range(3)])
            await target.wait_for(lambda: len(target.accepted) == 3)
            # A whole second (the field's precision) after the events before it, as the time of the backup.
            now = datetime.now(UTC)
            since = now.replace(microsecond=0) + timedelta(seconds=1)
            await asyncio.sleep((since - now).total_seconds() + 0.05)
            await post_all(hub, [{"id": f"after-{i}", "key": f"k{i}", "seq": 10 + i} for i in range(3)])
            await target.wait_for(lambda: len(target.accepted) == 6)
            await settled(hub, "erp", since)
            target.accepted.clear()  # restored from the backup: what came after it is gone

            page = await signed_in(browser, hub.ops.port, timezone_id="Europe/Berlin")
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/subscriber/erp")
            await page.get_by_role("button", name="Send again…").click()
            await expect(page.locator("#status")).to_contain_text("Give the time since when")
            local = since.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M:%S")
            await page.locator("#redeliver-since").fill(local)
            await page.locator("#redeliver-keys").fill(" k1 ")  # one customer's events only, first
            await page.get_by_role("button", name="Send again…").click()
            confirm = page.get_by_role("alertdialog", name="Confirm sending again")
            await expect(confirm).to_contain_text("1 of the 1 event(s) delivered in the window would be sent again", timeout=30_000)
            await page.get_by_role("button", name="Cancel").click()
            await page.locator("#redeliver-keys").fill("")
            await page.get_by_role("button", name="Send again…").click()
            await expect(confirm).to_contain_text("3 of the 3 event(s) delivered in the window would be sent again", timeout=30_000)
            await shot(page, "subscriber-redeliver-confirm")
            await asyncio.sleep(0.5)
            assert target.accepted == [], "a dry run sent something"
            await page.get_by_role("button", name="Yes, send again").click()
            await expect(page.locator("#status")).to_contain_text("Sent again 3 event(s) to erp.", timeout=30_000)
            await target.wait_for(lambda: len(target.accepted) == 3)
            await asyncio.sleep(1)  # anything more would arrive now
            assert sorted(call.body["payment_id"] for call in target.accepted) == ["after-0", "after-1", "after-2"]
            await shot(page, "subscriber-redelivered")
    finally:
        await target.stop()


async def test_a_subscriber_that_joined_later_is_given_the_history_from_its_page(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """A CRM added to a running integration: its page backfills what its route gives it from the
    events that came before it joined (a dry run confirmed first); the ERP gets nothing again."""
    target = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{target.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        path = write_config(tmp_path / "bus.yaml", config)
        since = datetime.now(UTC).replace(microsecond=0)  # the field's precision: whole seconds
        await asyncio.sleep(1.05)
        async with build_hub(path) as hub:
            await post_all(hub, [{"id": f"before-{i}", "key": f"k{i}", "seq": i} for i in range(3)])
            await target.wait_for(lambda: len(target.accepted) == 3)
        config["outbound"].append({"name": "crm", "type": "http", "url": f"{target.url}/crm"})
        config["routes"].append({"name": "to-crm", "from": "Payment", "when": "amount >= 1", "to": ["crm"]})
        async with build_hub(write_config(path, config)) as hub:
            await post_all(hub, [{"id": "after-2", "key": "k2", "seq": 20}])  # live: k2's newest, which the CRM gets at once
            await target.wait_for(lambda: len(target.accepted) == 5)  # the ERP gets after-2 too
            page = await signed_in(browser, hub.ops.port, timezone_id="America/New_York")
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/subscriber/crm")
            local = since.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%dT%H:%M:%S")
            await page.locator("#backfill-since").fill(local)
            confirm = page.get_by_role("alertdialog", name="Confirm the backfill")
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until the router has committed what it routed (records after its position are left to it)
                await page.get_by_role("button", name="Backfill…").click()
                await expect(confirm).to_be_visible(timeout=30_000)
                if "not routed yet" not in await confirm.inner_text() or asyncio.get_running_loop().time() > deadline:
                    break
                await page.get_by_role("button", name="Cancel").click()
                await asyncio.sleep(0.3)
            # before-0 has amount 0: the CRM's route leaves it out, as it would have live; after-2 it has, and
            # before-2 is older than it (k2)
            await expect(confirm).to_contain_text("1 of the 3 event(s) its routes (to-crm) give it from the window would be written")
            await expect(confirm).to_contain_text("1 already delivered; 1 superseded")
            await page.get_by_role("button", name="Cancel").click()
            await page.locator("#backfill-superseded").check()  # a target that keeps every event: older ones too
            await page.get_by_role("button", name="Backfill…").click()
            await expect(confirm).to_contain_text("2 of the 3 event(s)", timeout=30_000)
            await page.get_by_role("button", name="Cancel").click()
            await page.locator("#backfill-superseded").uncheck()
            await page.get_by_role("button", name="Backfill…").click()
            await expect(confirm).to_contain_text("1 of the 3 event(s)", timeout=30_000)
            await shot(page, "subscriber-backfill-confirm")
            await asyncio.sleep(0.5)
            assert len(target.accepted) == 5, "a dry run wrote"  # the ERP's 4 (after-2 too) and the CRM's after-2
            await page.get_by_role("button", name="Yes, backfill").click()
            await expect(page.locator("#status")).to_contain_text("Backfilled 1 event(s) to crm.", timeout=30_000)
            await target.wait_for(lambda: len(target.accepted) == 6)
            await asyncio.sleep(1)  # anything more would arrive now
            assert [c.body["payment_id"] for c in target.accepted if c.path == "/crm"] == ["after-2", "before-1"]
            assert len([c for c in target.accepted if c.path == "/erp"]) == 4, "the ERP was sent the history again"
            await shot(page, "subscriber-backfilled")
    finally:
        await target.stop()


async def test_a_button_the_hub_refuses_says_why(tmp_path: Path, bootstrap: str, browser: Browser) -> None:
    """A read-only token pressing Pause: the hub answers 403, and the page says so (it said nothing)."""
    target = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{target.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}, {"name": "viewer", "token": "console-viewer-token", "scope": "read"}]
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port, token="console-viewer-token")
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/subscriber/erp")
            await page.get_by_role("button", name="Pause deliveries").click()
            await expect(page.locator("#status")).to_contain_text("The hub refused: token 'viewer' may only read")
            await expect(page.get_by_role("button", name="Pause deliveries")).to_be_visible()  # not paused
            await shot(page, "subscriber-refused")
    finally:
        await target.stop()


async def test_a_pollers_position_is_seen_and_kept_across_a_changed_filter_from_its_page(
    tmp_path: Path, bootstrap: str, browser: Browser
) -> None:
    """An sql_poll whose `where` was widened while it was paused: its page shows the position as
    saved in another source (what changed), offers to keep it only while paused, asks to confirm,
    and once kept and resumed the poller goes on from it."""

    from tests.integration.test_positions import DSN, KIND, settled, stamp
    from tests.integration.test_sql import run_sql
    from tests.integration.test_sql_poll import hub_config as poll_config
    from tests.integration.test_sql_poll import insert_rows, table_in

    async with table_in(KIND) as table:
        await run_sql(KIND, DSN, insert_rows(table, range(1, 3), stamp("2020-01-02")))
        await run_sql(KIND, DSN, insert_rows(table, range(3, 4), stamp("2020-01-01")))
        config = poll_config(bootstrap, DSN, table, where="id <= 2")
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with build_hub(write_config(tmp_path / "narrow.yaml", config)) as hub:
            await settled(hub, 2)
            page = await signed_in(browser, hub.ops.port)
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/inbound/legacy")
            await expect(page.locator("#position-state")).to_have_text("current", timeout=20_000)
            await expect(page.get_by_role("button", name="Read again from the start…")).to_be_disabled()
            await page.get_by_role("button", name="Pause reading").click()
            await expect(page.get_by_role("button", name="Resume reading")).to_be_visible(timeout=10_000)
            await page.close()

        config["inbound"][0]["where"] = "id <= 100"
        async with build_hub(write_config(tmp_path / "wide.yaml", config)) as hub:
            page = await signed_in(browser, hub.ops.port)
            await page.goto(f"http://127.0.0.1:{hub.ops.port}/console/#/inbound/legacy")
            await expect(page.locator("#position-state")).to_have_text("another source", timeout=20_000)
            await expect(page.locator("#position-saved-in")).to_contain_text("id <= 2")
            await expect(page.locator("#position-saved-in")).to_contain_text("(where changed)")
            await expect(page.locator("#position-text")).to_contain_text("NOT used")
            await shot(page, "inbound-position-another-source")
            await page.get_by_role("button", name="Keep this position…").click()
            await expect(page.get_by_role("alertdialog")).to_contain_text("Records the changed where lets in")
            await shot(page, "inbound-position-confirm")
            await page.get_by_role("button", name="Yes, keep it").click()
            await expect(page.locator("#status")).to_contain_text("legacy: position kept for what it reads now (where changed)")
            await expect(page.locator("#position-state")).to_have_text("current")
            await shot(page, "inbound-position-kept")

            await run_sql(KIND, DSN, insert_rows(table, range(4, 5), stamp("2021-01-01")))
            await page.get_by_role("button", name="Resume reading").click()
            assert await settled(hub, 3) == {"legacy:1", "legacy:2", "legacy:4"}, "kept: row 3, before the position, is not read"
            await ready_within(hub.ops.port)
