"""SOAP adapters against a stand-in ledger service described by a real WSDL (examples/shop-orders-to-soap-erp/ledger.wsdl,
examples/kit/soap_erp.py), through the real embedded broker: invoices from a route become
PostInvoice calls (SOAP 1.1 and 1.2, WS-Security UsernameToken), a fault dead-letters that
event with the fault's text, a 503 is retried; ``soap_poll`` reads ListInvoices by a watermark;
``bus validate`` checks a mapping against the WSDL's types."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.cli import main
from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from examples.kit.soap_erp import SoapLedger
from tests.support.hub import build_hub, flow_config, write_config
from tests.support.wait import health_saying, until

WEBHOOK = {
    "name": "billing",
    "type": "http_webhook",
    "path": "/hooks/invoices",
    "emit": {
        "schema": "Invoice",
        "id": "id",
        "key": "account",
        "map": {"invoice_id": "id", "account": "account", "currency": '"eur"', "amount": "amount_cents", "due": "issued", "memo": "memo"},
    },
}
BODY = {
    "InvoiceNumber": "invoice_id",
    "Account": 'coalesce(account, "none")',
    "Amount": "major_units(amount, currency)",
    "Currency": "upper(currency)",
    "IssueDate": 'coalesce(due, "2026-07-01")',
    "Memo": "memo",
    "Line": {"$each": "[1, 2]", "$as": "n", "Description": '"part " + str(n)', "Amount": "n"},
}


def soap_block(ledger: SoapLedger, wsdl: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "erp",
        "type": "soap",
        "wsdl": wsdl.name,
        "operation": "PostInvoice",
        "body": BODY,
        "permanent_faults": ["PERIOD_CLOSED"],
        "delivery": {"backoff_initial": "100ms", "backoff_max": "300ms"},
        **extra,
    }


def soap_poll_block(**extra: Any) -> dict[str, Any]:
    """ListInvoices read by a watermark: the soap_poll of these tests."""
    return {
        "name": "ledger",
        "type": "soap_poll",
        "wsdl": "ledger.wsdl",
        "operation": "ListInvoices",
        "records": "Invoice",
        "since": {"param": "ChangedSince", "field": "ChangedAt", "id": "InvoiceId"},
        "interval": "300ms",
        "emit": {
            "schema": "Invoice",
            "id": 'InvoiceId + "@" + ChangedAt',
            "key": "Account",
            "map": {
                "invoice_id": "InvoiceNumber",
                "account": "Account",
                "currency": "lower(Currency)",
                "amount": "minor_units(Amount, Currency)",
            },
        },
        **extra,
    }


def hub_config(bootstrap: str, inbound: list[dict[str, Any]], outbound: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return flow_config(bootstrap, inbound, outbound, schema="Invoice")


def write(tmp_path: Path, ledger: SoapLedger, config: dict[str, Any]) -> Path:
    (tmp_path / "ledger.wsdl").write_text(ledger.wsdl_text())  # the WSDL as the service serves it, saved beside the config
    return write_config(tmp_path / "bus.yaml", config)


def invoice(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"INV-2026-{i:04}", "account": "4000", "amount_cents": 10_000 + i, "issued": "2026-07-15", "memo": None, **changes}


async def post(hub: Hub, *invoices: dict[str, Any]) -> None:
    assert hub.web is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
        for body in invoices:
            assert (await client.post("/hooks/invoices", json=body)).status_code == 202


async def parked(hub: Hub, count: int) -> list[Any]:
    """The subscriber's dead letters, once there are ``count`` of them."""
    for _ in range(300):
        letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp"))
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(letters)} of {count} dead letters")


@pytest.mark.parametrize(
    ("port", "wsse"),
    [
        pytest.param("LedgerSoap11Port", {"username": "hub", "password": "s3cret"}, id="soap-1.1-password-text"),
        pytest.param("LedgerSoap12Port", {"username": "hub", "password": "s3cret", "digest": True}, id="soap-1.2-password-digest"),
    ],
)
async def test_invoices_are_posted_a_fault_dead_letters_its_event_and_a_503_is_retried(
    port: str, wsse: dict[str, Any], tmp_path: Path, bootstrap: str
) -> None:
    ledger = await SoapLedger(closed_periods={"2026-03"}, username="hub", password="s3cret", fail_next=2).start()
    path = write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [soap_block(ledger, tmp_path / "ledger.wsdl", port=port, wsse=wsse)]))
    good = [invoice(i, memo="first" if i == 0 else None) for i in range(10)]
    try:
        async with build_hub(path) as hub:
            await post(hub, good[0], invoice(90, account="9999"), *good[1:5], invoice(91, issued="2026-03-31"), *good[5:])
            await until(lambda: len(ledger.invoices) >= 10, "ten invoices posted", timeout=60)
            letters = await parked(hub, 2)
            reasons = {dict(r.headers)["ce_id"].decode(): dict(r.headers)["bus_error"].decode() for r in letters}
            await asyncio.sleep(0.5)  # nothing more arrives
        assert sorted(i["InvoiceNumber"] for i in ledger.invoices) == [g["id"] for g in good]  # each once, none of the refused
        assert set(reasons) == {"INV-2026-0090", "INV-2026-0091"}, reasons
        assert "Account 9999 does not exist" in reasons["INV-2026-0090"] and "UNKNOWN_ACCOUNT" in reasons["INV-2026-0090"]
        assert "Period 2026-03 is closed for posting" in reasons["INV-2026-0091"]  # a Server fault the config calls permanent
        first = next(i for i in ledger.invoices if i["InvoiceNumber"] == "INV-2026-0000")
        assert (first["Amount"], first["Memo"], first["Lines"], first["IssueDate"]) == ("100.00", "first", 2, "2026-07-15")
        outcomes = Counter(str(c["outcome"]) for c in ledger.calls)
        assert outcomes["503"] == 2 and outcomes["ok"] == 10, outcomes
        assert {c["version"] for c in ledger.calls} == {"1.1" if "11" in port else "1.2"}
    finally:
        await ledger.stop()


async def test_a_refusal_in_a_reply_without_a_fault_is_a_dead_letter(tmp_path: Path, bootstrap: str) -> None:
    """A ledger that puts an invoice of a held account "on hold": its reply says Status HELD, no
    fault, HTTP 200. Counted as delivered, the invoice was never posted and nothing said. With
    refused_when over the reply, it is dead-lettered with the reply."""
    ledger = await SoapLedger(held_accounts={"4200"}).start()
    block = soap_block(ledger, tmp_path / "ledger.wsdl", port="LedgerSoap11Port", refused_when='Status != "POSTED"')
    path = write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [block]))
    try:
        async with build_hub(path) as hub:
            await post(hub, invoice(1), invoice(92, account="4200"), invoice(2))
            await until(lambda: len(ledger.invoices) >= 2, "two invoices posted", timeout=60)
            [letter] = await parked(hub, 1)
        headers = dict(letter.headers)
        assert headers["ce_id"] == b"INV-2026-0092" and headers["bus_error_class"] == b"PermanentError", headers
        assert b'answered 200, and its answer says refused_when (Status != "POSTED")' in headers["bus_error"]
        assert b"HELD" in headers["bus_error"]
        assert sorted(i["InvoiceNumber"] for i in ledger.invoices) == ["INV-2026-0001", "INV-2026-0002"]
    finally:
        await ledger.stop()


@pytest.mark.parametrize("port", ["LedgerSoap11Port", "LedgerSoap12Port"])
async def test_a_wrong_password_is_retried_not_dead_lettered(port: str, tmp_path: Path, bootstrap: str) -> None:
    ledger = await SoapLedger(username="hub", password="s3cret").start()
    block = soap_block(ledger, tmp_path / "ledger.wsdl", port=port, wsse={"username": "hub", "password": "wrong"})
    path = write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [block]))
    try:
        async with build_hub(path) as hub:
            await post(hub, invoice(1))
            await until(lambda: len(ledger.calls) >= 3, "three attempts", timeout=30)
            # The credentials are at fault, not the event: it waits for a fix instead of being dead-lettered.
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp")) == []
        assert ledger.invoices == [] and {c["outcome"] for c in ledger.calls} == {"wsse:FailedAuthentication"}
    finally:
        await ledger.stop()


async def test_http_basic_credentials_in_utf8_on_both_directions_and_a_refusal_waits_for_a_fix(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``basic_auth`` on the soap outbound and on soap_poll: every call carries the credentials
    (UTF-8, RFC 7617); a 401 is the credentials' fault, so the event waits for a fix instead of
    being dead-lettered. A user name with ':' cannot be sent in Basic credentials: refused at load."""
    ledger = await SoapLedger(basic=("hub", "pässwörd")).start()
    ledger.add_invoice("L-001", "4100", "1.50", "2026-08-01T00:00:00Z")
    outbound = soap_block(ledger, tmp_path / "ledger.wsdl", basic_auth={"username": "hub", "password": "pässwörd"})
    poll = soap_poll_block(basic_auth={"username": "hub", "password": "pässwörd"})
    path = write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK, poll], [outbound]))
    try:
        async with build_hub(path) as hub:
            await post(hub, invoice(1))
            await until(lambda: "INV-2026-0001" in {i["InvoiceNumber"] for i in ledger.invoices}, "the posted invoice at the ledger")
            for _ in range(300):  # and the ledger's invoice read by soap_poll
                polled = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Invoice"))
                if "L-001" in {hub.codec.decode(r.value)[1]["invoice_id"] for r in polled}:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("soap_poll read nothing")
        assert 401 not in {c["outcome"] for c in ledger.calls}

        outbound["basic_auth"]["password"] = "wrong"
        write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [outbound]))
        async with build_hub(path) as hub:
            await post(hub, invoice(2))
            await until(lambda: [c["outcome"] for c in ledger.calls].count(401) >= 3, "three refused attempts", timeout=30)
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp")) == []
        assert "INV-2026-0002" not in {i.get("InvoiceNumber") for i in ledger.invoices}
    finally:
        await ledger.stop()

    outbound["basic_auth"]["username"] = "hub:admin"
    write(tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [outbound]))
    assert main(["validate", "--json", "-c", str(path)]) == 2
    errors = {e["field"]: e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert "cannot hold ':'" in errors["outbound[0].basic_auth.username"], errors


async def test_soap_poll_reads_changed_invoices_by_a_watermark(tmp_path: Path, bootstrap: str) -> None:
    ledger = await SoapLedger().start()
    for i in range(25):
        ledger.add_invoice(f"L-{i:03}", "4100", f"{i}.50", f"2026-08-01T00:00:{i // 5:02d}Z")  # five share each timestamp
    poll = soap_poll_block()
    path = write(tmp_path, ledger, hub_config(bootstrap, [poll]))

    async def published(hub: Hub) -> list[dict[str, Any]]:
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Invoice"))
        return [hub.codec.decode(r.value)[1] for r in records]

    try:
        async with build_hub(path) as hub:
            for _ in range(300):
                if len(await published(hub)) >= 25:
                    break
                await asyncio.sleep(0.1)
            ledger.add_invoice("L-late", "4100", "1.00", "2026-08-01T00:00:04Z")  # late, at the watermark's own timestamp
            ledger.invoices[0]["ChangedAt"] = "2026-08-01T00:01:00Z"  # an update
            for _ in range(300):
                if len(await published(hub)) >= 27:
                    break
                await asyncio.sleep(0.1)

            # Three more calls at the ledger (counted where they arrive, not by the poller's own
            # counter): each asks from the watermark, and none may publish anything again.
            def calls() -> int:
                return len([c for c in ledger.calls if c.get("operation") == "ListInvoices"])

            made = calls()
            await until(lambda: calls() >= made + 3, "three more polls", timeout=30)
            events = await published(hub)
        numbers = Counter(e["invoice_id"] for e in events)
        assert len(events) == 27 and numbers["L-000"] == 2 and numbers["L-late"] == 1, numbers
        assert next(e for e in events if e["invoice_id"] == "L-003")["amount"] == 350
    finally:
        await ledger.stop()


async def test_soap_poll_takes_every_changed_invoice_in_whatever_order_they_are_listed(tmp_path: Path, bootstrap: str) -> None:
    """A ledger that lists changed invoices in the order they were made, not by ChangedAt: each
    invoice older than one taken before it in the same answer was dropped as "older" than the
    watermark, and the next call asked from the newest: 4 of 10 were published, unsaid."""
    ledger = await SoapLedger(lists_in_id_order=True).start()
    for i in range(10):
        ledger.add_invoice(f"U-{i:03}", "4100", f"{i}.00", f"2026-08-01T00:00:{(i * 3) % 10:02d}Z")
    path = write(tmp_path, ledger, hub_config(bootstrap, [soap_poll_block()]))

    async def numbers(hub: Hub) -> Counter[str]:
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Invoice"))
        return Counter(hub.codec.decode(r.value)[1]["invoice_id"] for r in records)

    try:
        async with build_hub(path) as hub:
            for _ in range(300):
                if len(await numbers(hub)) >= 10:
                    break
                await asyncio.sleep(0.1)
            ledger.invoices[4]["ChangedAt"] = "2026-08-01T00:01:00Z"  # a later change to one of them
            for _ in range(300):
                if sum((await numbers(hub)).values()) >= 11:
                    break
                await asyncio.sleep(0.1)
            made = len(ledger.calls)
            await until(lambda: len(ledger.calls) >= made + 3, "three more polls", timeout=30)
            seen = await numbers(hub)
        assert seen == Counter({f"U-{i:03}": 2 if i == 4 else 1 for i in range(10)}), seen
    finally:
        await ledger.stop()


async def test_soap_poll_with_an_overlap_takes_an_invoice_that_became_visible_late_once_across_a_restart(
    tmp_path: Path, bootstrap: str
) -> None:
    """An invoice stamped before the watermark but listed only later (a replica, a record stamped
    before its transaction committed) was never asked for again. With `since.overlap` each call asks
    from that much earlier: the late invoice is published, and the ones read before are not, also
    after a restart (they are remembered in the saved position)."""
    ledger = await SoapLedger().start()
    for i in range(10):
        ledger.add_invoice(f"O-{i:03}", "4100", f"{i}.00", f"2026-08-01T00:00:{i:02d}Z")
    config = hub_config(bootstrap, [soap_poll_block(since={**soap_poll_block()["since"], "overlap": "5m"})])
    path = write(tmp_path, ledger, config)

    async def numbers(hub: Hub) -> Counter[str]:
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Invoice"))
        return Counter(hub.codec.decode(r.value)[1]["invoice_id"] for r in records)

    def asked_since() -> list[str]:
        return [c.get("since", "") for c in ledger.calls if c.get("operation") == "ListInvoices"]

    try:
        async with build_hub(path) as hub:
            await until(lambda: len(asked_since()) >= 2, "two calls", timeout=30)
            ledger.add_invoice("O-late", "4100", "1.00", "2026-08-01T00:00:03Z")  # stamped before the watermark (00:00:09)
            made = len(asked_since())
            await until(lambda: len(asked_since()) >= made + 3, "three more calls", timeout=30)
            first = await numbers(hub)
        async with build_hub(path) as hub:  # the window's invoices come again in its answers; none is published again
            made = len(asked_since())
            await until(lambda: len(asked_since()) >= made + 3, "three calls after the restart", timeout=30)
            second = await numbers(hub)
        assert first == Counter({**{f"O-{i:03}": 1 for i in range(10)}, "O-late": 1}), first
        assert second == first, second
        assert asked_since()[-1].startswith("2026-07-31T23:55:09"), asked_since()[-3:]  # five minutes before the watermark
    finally:
        await ledger.stop()


async def test_an_answer_larger_than_max_answer_bytes_is_not_read_and_said(tmp_path: Path, bootstrap: str) -> None:
    """A service answering more than max_answer_bytes (25 invoices here, against 1 KiB) is not read
    further: the poll says so in the adapter's health, and publishes nothing of it."""
    ledger = await SoapLedger().start()
    for i in range(25):
        ledger.add_invoice(f"L-{i:03}", "4100", f"{i}.50", f"2026-08-01T00:00:{i:02d}Z")
    poll = soap_poll_block(max_answer_bytes=1024)
    path = write(tmp_path, ledger, hub_config(bootstrap, [poll]))
    try:
        async with build_hub(path) as hub:
            health = await health_saying(hub.inbound[0], "max_answer_bytes")
            assert not health.ok and "answers more than 1,024 bytes" in health.detail, health
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Invoice")) == []
    finally:
        await ledger.stop()


def test_bus_validate_checks_the_mapping_against_the_wsdl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = SoapLedger()  # not started: validation reads the WSDL file only
    body = {k: v for k, v in BODY.items() if k != "Amount"} | {"Acount": "account"}
    block = soap_block(ledger, tmp_path / "ledger.wsdl", body=body)
    other = soap_block(ledger, tmp_path / "ledger.wsdl", name="erp2", operation="PostInvoices")
    path = write(tmp_path, ledger, hub_config("127.0.0.1:9", [WEBHOOK], [block, other]))
    assert main(["validate", "--json", "-c", str(path)]) == 2
    errors = {e["field"]: e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert "the input of PostInvoice has no field 'Acount'; did you mean 'Account'?" in errors["outbound[0].body.Acount"], errors
    assert "the input of PostInvoice.Amount has no default and is not mapped" in errors["outbound[0].body"], errors
    assert "has no operation 'PostInvoices' (it has PostInvoice, ListInvoices)" in errors["outbound[1].operation"], errors

    block = soap_block(ledger, tmp_path / "ledger.wsdl", body=BODY | {"Amount": "currency", "IssueDate": "amount > 5"})
    path = write(tmp_path, ledger, hub_config("127.0.0.1:9", [WEBHOOK], [block]))
    assert main(["validate", "--json", "-c", str(path)]) == 2
    errors = {e["field"]: e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert set(errors) == {"outbound[0].body.Amount", "outbound[0].body.IssueDate"}, errors  # text for a decimal, true or false for a date

    path = write(tmp_path, ledger, hub_config("127.0.0.1:9", [WEBHOOK], [soap_block(ledger, tmp_path / "ledger.wsdl")]))
    assert main(["validate", "-c", str(path)]) == 0, capsys.readouterr()


async def test_a_redirect_is_not_followed_with_the_calls_credentials(tmp_path: Path, bootstrap: str) -> None:
    """A 307 sends the envelope again, WS-Security password and all, wherever its Location points;
    aiohttp followed it. Now the poll does not, and says where it was sent."""
    from aiohttp import web

    from examples.kit.standin import serve

    elsewhere: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(status=500)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://localhost:{other_port}/soap")

    other = web.Application()
    other.router.add_post("/soap", collect)
    other_runner, other_port = await serve(other)
    moved = web.Application()
    moved.router.add_post("/soap", redirect)
    moved_runner, moved_port = await serve(moved)
    ledger = await SoapLedger().start()
    poll = soap_poll_block(url=f"http://127.0.0.1:{moved_port}/soap", wsse={"username": "hub", "password": "s3cret"})
    path = write(tmp_path, ledger, hub_config(bootstrap, [poll]))
    try:
        async with build_hub(path) as hub:
            health = await health_saying(hub.inbound[0], "redirects are not followed")
            assert not health.ok and f"answered 307 to http://localhost:{other_port}/soap" in health.detail, health
            assert elsewhere == []
    finally:
        await ledger.stop()
        await moved_runner.cleanup()
        await other_runner.cleanup()


async def test_calls_go_through_the_proxy_the_environment_names(tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a company's network lets only its proxy out: SOAP calls (aiohttp, which reads no proxy
    variable unless told) went straight to the service and failed. They go through HTTP_PROXY with
    the proxy's credentials now, and straight to what NO_PROXY names or to loopback."""
    import base64
    import socket

    from tests.support.http_proxy import ForwardProxy
    from tests.support.private_server import binaries_missing

    here = socket.gethostname()  # by the machine's name: a loopback address never goes through a proxy
    if socket.gethostbyname(here) != "127.0.0.1":
        binaries_missing(f"the machine's name {here} does not resolve to 127.0.0.1, where the service listens")
    ledger = await SoapLedger(username="hub", password="s3cret").start()
    proxy = await ForwardProxy(user="hub", password="pr0xy").start()
    endpoint = f"http://{here}:{ledger.port}/soap"
    wsse = {"username": "hub", "password": "s3cret"}
    calls = write(
        tmp_path, ledger, hub_config(bootstrap, [WEBHOOK], [soap_block(ledger, tmp_path / "ledger.wsdl", wsse=wsse, url=endpoint)])
    )
    polls = write_config(tmp_path / "polls.yaml", hub_config(bootstrap, [soap_poll_block(url=endpoint, wsse=wsse)]))
    credentials = "Basic " + base64.b64encode(b"hub:pr0xy").decode()

    def through_proxy() -> int:
        return sum(1 for a in proxy.asked if (a.method, a.target, a.authorization) == ("POST", endpoint, credentials))

    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with build_hub(calls) as hub:
            await post(hub, invoice(1), invoice(2))
            await until(lambda: len(ledger.invoices) == 2, "two invoices posted", timeout=30)
        assert through_proxy() == 1, proxy.asked  # one connection, kept alive (the stand-in records a connection's first request)
        async with build_hub(polls):
            await until(lambda: any(c["operation"] == "ListInvoices" for c in ledger.calls), "a poll", timeout=30)
        assert through_proxy() == 2, proxy.asked

        monkeypatch.setenv("NO_PROXY", here)
        async with build_hub(calls) as hub:
            await post(hub, invoice(3))
            await until(lambda: len(ledger.invoices) == 3, "the third invoice", timeout=30)
        assert through_proxy() == 2, "NO_PROXY: straight to the service"
    finally:
        await proxy.stop()
        await ledger.stop()
