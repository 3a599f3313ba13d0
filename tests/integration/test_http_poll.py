"""``http_poll`` against a local CRM-like API (tests/support/crm.py) and the real embedded broker."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from examples.kit.standin import serve
from tests.support.crm import CrmApi
from tests.support.hub import build_hub, reading, unique_prefix, write_config
from tests.support.wait import health_saying, healthy, until


def config(bootstrap: str, api: CrmApi, poll: dict[str, Any]) -> dict[str, Any]:
    inbound = {
        "name": "contacts",
        "type": "http_poll",
        "interval": "300ms",
        "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
        "auth": {"type": "oauth2", "token_url": f"{api.url}/oauth/token", "client_id": "hub", "client_secret": "s3cret"},
        "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "email": "email", "name": "name"}},
        **poll,
    }
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [inbound],
    }


async def contacts_api(handle: Any) -> tuple[web.AppRunner, int]:
    """A stand-in API answering GET /api/contacts with ``handle``: its runner (to clean up) and port."""

    app = web.Application()
    app.router.add_get("/api/contacts", handle)
    return await serve(app)


async def published(hub: Hub) -> Counter[str]:
    """Events on the Customer topic, by ce_id (a count above 1 is a duplicate)."""
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


async def wait_published(hub: Hub, count: int, timeout: float = 60) -> Counter[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = await published(hub)
        if sum(seen.values()) >= count:
            return seen
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{sum(seen.values())} of {count} events published within {timeout}s")
        await asyncio.sleep(0.2)


async def test_pages_ties_late_rows_rate_limits_and_token_refresh(tmp_path: Path, bootstrap: str) -> None:
    # Short-lived tokens (refreshed 1 s before their 2 s expiry), a 429 every 5th call, one 503.
    api = await CrmApi(token_ttl=2.0, limit_every=5, fail_next=1).start()
    for i in range(120):  # ten contacts share each timestamp: a page boundary falls inside a tie
        api.add(f"c{i:03}", f"2026-01-01T00:00:{i // 10:02d}Z")
    poll = {
        "url": f"{api.url}/api/contacts",
        "records": "data",
        "pagination": {"type": "page", "size_param": "per_page", "size": 25},
        "auth": {
            "type": "oauth2",
            "token_url": f"{api.url}/oauth/token",
            "client_id": "hub",
            "client_secret": "s3cret",
            "refresh_before_s": 1,
        },
    }
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, api, poll))
    try:
        async with build_hub(path) as hub:
            seen = await wait_published(hub, 120)
            assert len(seen) == 120 and max(seen.values()) == 1
            # Rows that commit late with the current watermark's timestamp, newer rows, and an update.
            for i in range(5):
                api.add(f"late{i}", "2026-01-01T00:00:11Z")
                api.add(f"new{i}", "2026-01-01T00:00:12Z")
            api.add("c000", "2026-01-01T00:00:13Z", name="Renamed")
            seen = await wait_published(hub, 131)
            polls = hub.inbound[0].progress()["polls"]
            while int(hub.inbound[0].progress()["polls"]) < int(polls) + 3:
                await asyncio.sleep(0.1)  # more polls with nothing new
            seen = await published(hub)
            assert sum(seen.values()) == 131 and max(seen.values()) == 1, "a poll published a record twice"
            assert (await healthy(hub.inbound[0])).ok
            checkpoints = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.checkpoints)
            position = json.loads(checkpoints[-1].value)
            assert (position["since"], position["seen"]) == ("2026-01-01T00:00:13Z", ["c000"]) and position["etag"]
        statuses = Counter(r["status"] for r in api.requests)
        assert statuses[429] >= 2 and statuses[503] == 1 and statuses[304] >= 1, statuses
        assert api.tokens_issued >= 2  # the token was refreshed before it expired (or after a 401)
        # Inclusive watermark: a later poll asked from the last timestamp seen, not from the start.
        assert any(r["query"].get("updated_since") == "2026-01-01T00:00:13Z" for r in api.requests)
    finally:
        await api.stop()


async def test_restart_mid_backfill_resumes_from_the_checkpoint(tmp_path: Path, bootstrap: str) -> None:
    api = await CrmApi(delay=0.15).start()
    for i in range(300):
        api.add(f"c{i:03}", f"2026-02-01T00:{i // 60:02d}:{i % 60:02d}Z")
    poll = {"url": f"{api.url}/api/v2/contacts", "pagination": {"type": "link", "size_param": "limit", "size": 20}, "etag": False}
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, api, poll))
    try:
        async with build_hub(path) as hub:
            await wait_published(hub, 80)  # stopped mid-poll: the Link walk is at page 5 or so of 15
        before = len(api.requests)
        async with build_hub(path) as hub:
            seen = await wait_published(hub, 300)
            while len(seen) < 300:
                seen = await wait_published(hub, sum(seen.values()) + 1)
        # At least once: a restart may repeat the page in flight when it stopped, never more.
        assert sum(seen.values()) <= 300 + 20, f"{sum(seen.values()) - 300} duplicates"
        resumed = api.requests[before]["query"].get("updated_since")
        assert resumed and resumed >= "2026-02-01T00:01:00Z", f"the restart did not resume from the checkpoint: {resumed!r}"
    finally:
        await api.stop()


async def test_cursor_pages_bad_records_and_rejected_credentials(tmp_path: Path, bootstrap: str) -> None:
    api = await CrmApi().start()
    for i in range(30):
        api.add(f"c{i:03}", f"2026-03-01T00:00:{i:02d}Z")
    api.contacts.append({"id": "broken", "email": "x@example.com", "name": "No timestamp"})  # no watermark value
    api.add("nameless", "2026-03-01T00:00:59Z", name=None)  # does not fit Customer (name is required)
    poll = {
        "url": f"{api.url}/api/v3/contacts",
        "records": "records",
        "pagination": {"type": "cursor", "size_param": "limit", "size": 7, "next": "meta.next_cursor"},
    }
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, api, poll))
    wrong = config(bootstrap, api, poll)
    wrong["inbound"][0]["auth"]["client_secret"] = "not-the-secret"
    wrong_path = write_config(tmp_path / "wrong.yaml", wrong)
    try:
        async with build_hub(path) as hub:
            await wait_published(hub, 30)
            for _ in range(100):
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("contacts"))
                if len(parked) == 2:
                    break
                await asyncio.sleep(0.2)
            reasons = sorted(dict(r.headers)["bus_error"].decode() for r in parked)
            assert "no watermark value" in reasons[1] and "name" in reasons[0], reasons
            assert sum((await published(hub)).values()) == 30
        async with build_hub(wrong_path) as hub:
            for _ in range(100):
                health = await hub.inbound[0].health()
                if "refused the client credentials" in health.detail:
                    break
                await asyncio.sleep(0.1)
            assert not health.ok and "401 invalid_client" in health.detail, health
            assert not (await hub.readiness())["inbound:contacts"]
    finally:
        await api.stop()


async def test_interval_runs_from_the_end_of_one_poll_to_the_start_of_the_next(tmp_path: Path, bootstrap: str) -> None:
    api = await CrmApi(delay=0.4).start()  # every answer takes 0.4 s: longer than the interval
    try:
        poll = {"interval": "300ms", "url": f"{api.url}/api/contacts", "records": "data"}
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, api, poll))):
            deadline = asyncio.get_running_loop().time() + 20
            while len([r for r in api.requests if "at" in r]) < 4 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
        arrivals = [r["at"] for r in api.requests if "at" in r]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(gaps) >= 3
        # One page per poll: a poll ends 0.4 s after its request arrives, the next starts 0.3 s later.
        assert min(gaps) >= 0.4 + 0.3 - 0.05, gaps
    finally:
        await api.stop()


async def test_ready_while_the_first_poll_still_walks_its_pages(tmp_path: Path, bootstrap: str) -> None:
    """Ready means serving: a backfill of many pages keeps the first poll going, and the hub is
    ready as soon as the API answers and records flow, not when the backfill ends."""
    api = await CrmApi(delay=0.25).start()
    for i in range(40):
        api.add(f"c{i:03}", f"2026-01-01T00:00:{i:02d}Z")
    poll = {"url": f"{api.url}/api/contacts", "records": "data", "pagination": {"type": "page", "size_param": "per_page", "size": 2}}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, api, poll))) as hub:
            adapter = reading(hub)
            seen = await wait_published(hub, 4)
            assert getattr(adapter, "polls", None) == 0 and len(seen) < 40  # the first poll is still walking its 20 pages
            assert (await healthy(adapter)).ok
            checks = await hub.readiness()
            assert all(checks.values()), checks  # /readyz is 200
    finally:
        await api.stop()


async def test_a_page_larger_than_max_page_bytes_is_refused_unread_and_said(tmp_path: Path, bootstrap: str) -> None:
    """An API that ignores the page size asked for answers with everything it has: read whole, that
    took the inbound pod's memory at every poll. Now the poll stops at max_page_bytes (counted
    decoded, so a gzip bomb stops too), says so in the adapter's health, and goes on once the API
    answers pages that fit."""
    import gzip

    state = {"mode": "everything"}
    contacts = [
        {"id": f"c{i:05}", "email": f"c{i}@example.com", "name": "x" * 40, "updated_at": "2026-01-01T00:00:00Z"} for i in range(3000)
    ]

    async def handle(request: web.Request) -> web.Response:
        if state["mode"] == "everything":  # the `limit` asked for is ignored: 3,000 records, about 300 KB
            return web.json_response({"data": contacts})
        if state["mode"] == "bomb":  # 2 MB of spaces before the JSON, 2 KB on the wire
            body = gzip.compress(b" " * 2_000_000 + json.dumps({"data": contacts[:1]}).encode())
            return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        return web.json_response({"data": contacts[:5]})  # fixed: a page of the size asked for

    runner, port = await contacts_api(handle)
    poll = {
        "url": f"http://127.0.0.1:{port}/api/contacts",
        "records": "data",
        "auth": None,
        "max_page_bytes": 64 * 1024,
        "pagination": {"type": "page", "size_param": "limit", "size": 5},
        "retries": 0,
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, CrmApi(), poll))) as hub:
            adapter = reading(hub)
            for mode, says in (("everything", "answers 3"), ("bomb", "answers more than 65,536 bytes")):
                state["mode"] = mode
                health = await health_saying(adapter, "max_page_bytes", says)
                assert not health.ok and "ask for smaller pages (pagination.size)" in health.detail, health
            assert sum((await published(hub)).values()) == 0  # nothing of a page it would not read
            state["mode"] = "fixed"
            await wait_published(hub, 5)
    finally:
        await runner.cleanup()


async def test_a_next_link_or_a_redirect_to_another_origin_is_not_followed_with_the_credentials(tmp_path: Path, bootstrap: str) -> None:
    """The poll's API key goes with every request it makes. An answer whose next-page link, or a
    redirect, points at another host (a compromised API, a misconfigured proxy, http instead of
    https) would have sent the key there: now the request is not made, and the health says why."""
    state = {"mode": "link"}
    elsewhere: list[dict[str, str]] = []  # what the other origin received: nothing, ever

    async def collect(request: web.Request) -> web.Response:
        elsewhere.append(dict(request.headers))
        return web.json_response({"data": []})

    other = web.Application()
    other.router.add_get("/{tail:.*}", collect)
    other_runner, other_port = await serve(other)

    async def handle(request: web.Request) -> web.Response:
        assert request.headers.get("X-Api-Key") == "k-secret"
        record = {"id": "c1", "email": "c1@example.com", "name": "One", "updated_at": "2026-01-01T00:00:00Z"}
        if state["mode"] == "redirect":
            raise web.HTTPFound(f"http://localhost:{other_port}/api/contacts")
        if state["mode"] == "link" and "page" not in request.query:  # page 2 lives elsewhere, it says
            return web.json_response({"data": [record], "next": f"http://localhost:{other_port}/api/contacts?page=2"})
        if "page" not in request.query:  # fixed: the next page on its own origin, as a path
            return web.json_response({"data": [record], "next": "/api/contacts?page=2"})
        return web.json_response({"data": [{**record, "id": "c2", "email": "c2@example.com"}], "next": None})

    runner, port = await contacts_api(handle)
    poll = {
        "url": f"http://127.0.0.1:{port}/api/contacts",
        "records": "data",
        "auth": {"type": "api_key", "header": "X-Api-Key", "key": "k-secret"},
        "pagination": {"type": "link", "next": "next"},
        "retries": 0,
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, CrmApi(), poll))) as hub:
            adapter = reading(hub)
            for mode in ("link", "redirect"):
                state["mode"] = mode
                health = await health_saying(adapter, f"localhost:{other_port}", "not followed, the poll's credentials would go with it")
                assert not health.ok and f"is outside http://127.0.0.1:{port}/api/contacts's origin" in health.detail, health
            assert elsewhere == []
            state["mode"] = "fixed"
            # Page 1 (also taken in the link mode), and page 2 once it is on the API's own origin.
            for _ in range(300):
                if len(await published(hub)) == 2:
                    break
                await asyncio.sleep(0.2)
            assert len(await published(hub)) == 2
    finally:
        await runner.cleanup()
        await other_runner.cleanup()


async def test_an_api_whose_next_page_points_back_is_said_and_not_walked_without_end(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cursor that points back to a page already read, or a `page` parameter the API ignores,
    had each poll ask for the same page 10,000 times (max_pages) with nothing said, and a GraphQL
    poll for ever. A cursor that goes round is now a problem in the adapter's health, named; a page
    that repeats the one before ends the walk with a WARNING. What came before is published."""
    asked: list[str] = []
    contacts = [{"id": f"c{i}", "email": f"c{i}@example.com", "name": "x", "updated_at": f"2026-01-01T00:00:0{i}Z"} for i in range(4)]

    async def cursors(request: web.Request) -> web.Response:
        cursor = request.query.get("cursor", "")
        asked.append(cursor)
        if cursor == "":
            return web.json_response({"data": contacts[:2], "next": "p2"})
        return web.json_response({"data": contacts[2:], "next": "p2" if cursor == "p2" else None})  # p2 points to itself

    async def pages(request: web.Request) -> web.Response:
        asked.append(request.query.get("page", ""))
        return web.json_response({"data": contacts[:2]})  # `page` ignored: every page is the first

    for handle, pagination in (
        (cursors, {"type": "cursor", "next": "next"}),
        (pages, {"type": "page", "size_param": "per_page", "size": 2}),
    ):
        asked.clear()
        runner, port = await contacts_api(handle)
        poll = {"url": f"http://127.0.0.1:{port}/api/contacts", "records": "data", "auth": None, "pagination": pagination, "retries": 0}
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, CrmApi(), poll))) as hub:
                adapter = reading(hub)
                if handle is cursors:
                    health = await health_saying(adapter, "would ask for page 2 again")
                    assert not health.ok and "?cursor=p2" in health.detail and "go round without end" in health.detail, health
                    assert len(await wait_published(hub, 4)) == 4
                    # Each poll asks for the first page and p2 once, then stops: not 10,000 times.
                    assert asked[:2] == ["", "p2"] and asked.count("p2") <= asked.count(""), asked
                else:
                    await wait_published(hub, 2)
                    await until(lambda: "taken as the last page" in caplog.text, "the warning")
                    assert "page 2 holds the same 2 record(s) as page 1" in adapter.attention(), adapter.attention()
                    assert caplog.text.count("taken as the last page") == 1  # said when it changes, not at every poll
                    assert asked[:2] == ["1", "2"] and set(asked) == {"1", "2"}, asked  # two pages per poll
                    assert (await healthy(adapter)).ok
        finally:
            await runner.cleanup()


def six_contacts() -> list[dict[str, str]]:
    return [{"id": f"c{i}", "email": f"c{i}@example.com", "name": "x", "updated_at": f"2026-01-01T00:00:0{i}Z"} for i in range(6)]


def newest_first(contacts: list[dict[str, str]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An API that pages the contacts changed since `updated_since`, newest first (not in watermark order)."""

    async def handle(request: web.Request) -> web.Response:
        since = request.query.get("updated_since", "")
        page, size = int(request.query.get("page", "1")), int(request.query.get("per_page", "2"))
        found = sorted((c for c in contacts if c["updated_at"] >= since), key=lambda c: c["updated_at"], reverse=True)
        return web.json_response({"data": found[(page - 1) * size : page * size]})

    return handle


async def test_a_walk_cut_short_of_an_unsorted_api_keeps_its_position(tmp_path: Path, bootstrap: str) -> None:
    """An API that answers newest first (`since.ordered: false`), walked 1 page at a time
    (max_pages 1): the position moved to the newest record taken, and the older records on the
    pages not read were never asked for again, whatever max_pages became. Now the position stays
    until a walk ends, the adapter says why, and a larger max_pages reads them all."""
    contacts = six_contacts()
    runner, port = await contacts_api(newest_first(contacts))
    poll = {
        "url": f"http://127.0.0.1:{port}/api/contacts",
        "records": "data",
        "auth": None,
        "since": {"param": "updated_since", "field": "updated_at", "id": "id", "ordered": False},
        "pagination": {"type": "page", "size_param": "per_page", "size": 2, "max_pages": 1},
    }
    raw = config(bootstrap, CrmApi(), poll)

    async def keys(hub: Hub) -> set[str]:
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
        return {(r.key or b"").decode() for r in records}

    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            adapter = reading(hub)
            await until(lambda: "the position stays where it was" in adapter.attention(), "the cut walk said", timeout=30)
            assert await keys(hub) == {"c5", "c4"}  # page 1 only, walked again at each poll
        raw["inbound"][0]["pagination"]["max_pages"] = 10
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            for _ in range(150):
                if await keys(hub) == {f"c{i}" for i in range(6)}:
                    break
                await asyncio.sleep(0.2)
            assert await keys(hub) == {f"c{i}" for i in range(6)}  # none passed over
            assert not hub.inbound[0].attention()
    finally:
        await runner.cleanup()


async def test_an_api_said_to_be_sorted_that_is_not_loses_no_record_and_is_said(tmp_path: Path, bootstrap: str) -> None:
    """`since.ordered` left at its default (true) for an API that answers newest first: each record
    older than one taken before it in the same poll was dropped as "older", unsaid (1 of 6 read).
    Now every record since the position is taken once, the adapter says the API is not sorted, and
    from then on it saves its position only after a whole walk."""
    contacts = six_contacts()
    runner, port = await contacts_api(newest_first(contacts))
    poll = {
        "url": f"http://127.0.0.1:{port}/api/contacts",
        "records": "data",
        "auth": None,
        "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
        "pagination": {"type": "page", "size_param": "per_page", "size": 2},
    }
    raw = config(bootstrap, CrmApi(), poll)

    async def keys(hub: Hub) -> Counter[str]:
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
        return Counter((r.key or b"").decode() for r in records)

    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            adapter = reading(hub)
            await until(lambda: adapter.polls >= 2, "two polls", timeout=30)
            assert set(await keys(hub)) == {f"c{i}" for i in range(6)}
            assert "not in watermark order" in adapter.attention(), adapter.attention()
            contacts.append({"id": "c9", "email": "c9@example.com", "name": "x", "updated_at": "2026-01-01T00:00:09Z"})
            for _ in range(150):
                if "c9" in await keys(hub):
                    break
                await asyncio.sleep(0.2)
            polls = adapter.polls
            await until(lambda: adapter.polls >= polls + 2, "two more polls", timeout=30)
            assert await keys(hub) == Counter({f"c{i}": 1 for i in [*range(6), 9]})
    finally:
        await runner.cleanup()


async def test_an_overlap_reads_a_record_that_became_visible_late_once(tmp_path: Path, bootstrap: str) -> None:
    """Many APIs make a record visible after records changed later (a search index that lags, a
    replica). Asked from the last watermark seen, such a record came too late and was never read:
    the poller without an overlap here misses it for good. With `since.overlap` each poll asks from
    that much earlier; the late record is read, and the records read before are not published
    again, across polls and across a restart (they are remembered in the position)."""
    api = await CrmApi().start()
    for i in range(5):
        api.add(f"c{i}", f"2026-03-01T10:00:0{i}Z")
    hub_config = config(bootstrap, api, {"url": f"{api.url}/api/contacts", "records": "data", "since": {
        "param": "updated_since", "field": "updated_at", "id": "id", "overlap": "5m"}})  # fmt: skip
    plain = {**hub_config["inbound"][0], "name": "plain", "since": {"param": "updated_since", "field": "updated_at", "id": "id"}}
    hub_config["inbound"].append(plain)
    path = write_config(tmp_path / "bus.yaml", hub_config)

    def by_inbound(seen: Counter[str]) -> dict[str, int]:
        return {name: sum(n for i, n in seen.items() if i.startswith(f"{name}:")) for name in ("contacts", "plain")}

    try:
        async with build_hub(path) as hub:
            await wait_published(hub, 10)
            api.add("late", "2026-03-01T10:00:02Z")  # visible only now, stamped before the position (10:00:04)
            api.add("c5", "2026-03-01T10:00:05Z")
            seen = await wait_published(hub, 13)
            polls = [int(p.progress()["polls"]) for p in hub.inbound]
            await until(lambda: all(int(p.progress()["polls"]) >= n + 3 for p, n in zip(hub.inbound, polls, strict=True)), "3 more polls")
            seen = await published(hub)
            assert by_inbound(seen) == {"contacts": 7, "plain": 6}, seen  # the plain poller passed over "late"
            assert max(seen.values()) == 1, "a poll published a record twice"
        async with build_hub(path) as hub:
            polls = [int(p.progress()["polls"]) for p in hub.inbound]
            await until(lambda: all(int(p.progress()["polls"]) >= n + 3 for p, n in zip(hub.inbound, polls, strict=True)), "3 polls")
            seen = await published(hub)
            assert by_inbound(seen) == {"contacts": 7, "plain": 6} and max(seen.values()) == 1, seen
    finally:
        await api.stop()
    asked = [r["query"].get("updated_since") for r in api.requests]
    assert "2026-03-01T09:55:05Z" in asked, sorted(set(filter(None, asked)))  # five minutes before the position, as the API writes it


async def the_record_polled_from(tmp_path: Path, bootstrap: str, body: bytes, content_type: str) -> dict[str, Any]:
    """The one Customer an API serving ``body`` as its only page is polled into."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    runner, port = await contacts_api(handle)
    try:
        poll = {
            "url": f"http://127.0.0.1:{port}/api/contacts",
            "records": "data",
            "auth": {"type": "api_key", "header": "X-Api-Key", "key": "k"},
        }
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, CrmApi(), poll))) as hub:
            await wait_published(hub, 1)  # up to a minute: a loaded machine's lease may be joined again first
            [record] = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
            return hub.codec.decode(record.value)[1]
    finally:
        await runner.cleanup()


async def test_an_answer_in_a_declared_legacy_charset_is_read_as_declared(tmp_path: Path, bootstrap: str) -> None:
    """A legacy API answers ISO-8859-1 and says so (`charset=`): read as UTF-8, every poll failed
    as "a body that is not JSON", for good."""
    page = {"data": [{"id": "c1", "email": "m@example.com", "name": "Müller", "updated_at": "2024-01-01T00:00:00Z"}]}
    body = json.dumps(page, ensure_ascii=False).encode("iso-8859-1")
    customer = await the_record_polled_from(tmp_path, bootstrap, body, "application/json; charset=ISO-8859-1")
    assert customer["name"] == "Müller"


async def test_a_page_that_gives_a_key_twice_is_read_as_the_apis_other_clients_read_it(tmp_path: Path, bootstrap: str) -> None:
    """An API whose serializer writes a key twice in one record: the whole page was refused as
    "not JSON" at every poll, and the source stood still. Its last value counts, as in any client."""
    record = b'{"id": "c1", "email": "old@example.com", "email": "m@example.com", "name": "M", "updated_at": "2024-01-01T00:00:00Z"}'
    customer = await the_record_polled_from(tmp_path, bootstrap, b'{"data": [' + record + b"]}", "application/json")
    assert customer["email"] == "m@example.com"
