"""Every recipe in examples/ run end to end: its stand-ins, `bus run -c <recipe>/bus.yaml` as a
child process on the session's broker, the real databases and queues of this machine.

Each recipe's ``run()`` is also its one command; here its report is checked field by field, so a
recipe that stops doing what its README says fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import require_service
from tests.support.hub import unique_prefix

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name.replace('-', '_')}", EXAMPLES / name / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
async def test_shopify_orders_become_quickbooks_invoices_and_stock_moves(bootstrap: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    run = recipe("shopify-orders-to-quickbooks")
    report = await run.run(12, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    # One invoice per order, with Shopify's total and one line per line item, at the mapped customer.
    assert sorted(report.invoice_totals()) == sorted(str(o["id"]) for o in report.orders)
    first = next(i for i in report.invoices if i["DocNumber"] == str(report.orders[0]["id"]))
    assert first["CustomerRef"] == {"value": "58"}  # Shopify customer 207, mapped by the table
    assert {i["CustomerRef"]["value"] for i in report.invoices} == {"58", "59", "1"}
    assert [line["SalesItemLineDetail"]["ItemRef"]["value"] for line in first["Line"]] == [
        li["sku"] for li in report.orders[0]["line_items"]
    ]
    assert first["TotalAmt"] == float(Decimal(report.orders[0]["total_price"]))
    # The throttled and the failed call were retried: more calls than invoices, none created twice.
    assert report.quickbooks_calls >= len(report.orders) + 2
    assert report.levels == report.expected_levels() and any(v < run.STOCK for v in report.levels.values())


@pytest.mark.timeout(240)
async def test_stripe_payments_are_posted_to_the_mariadb_ledger_and_reconcile(bootstrap: str) -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    run = recipe("stripe-payments-to-erp-ledger")
    report = await run.run(15, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    posted = report.postable()
    assert set(report.ledger) == set(posted) and len(posted) < len(report.events)  # failed payments are not posted
    some = next(iter(posted))
    assert report.ledger[some]["amount_minor"] == posted[some]["data"]["object"]["amount"]
    assert report.ledger[some]["memo"] == posted[some]["data"]["object"]["description"]
    assert report.answers["forged"] == 401 and report.answers["replayed"] == 401
    entered = len(report.succeeded())  # the retried deliveries were dropped by the route's dedup
    assert f"entered {entered}   delivered {entered - 1}   dead-lettered 1   in flight 0   unaccounted 0" in report.reconcile_output
    assert "target: 0 delivered id(s) missing there, 0 id(s) the hub never saw" in report.reconcile_output


@pytest.mark.timeout(240)
async def test_legacy_latin1_cases_are_backfilled_then_followed_live(bootstrap: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    run = recipe("legacy-db-to-cases")
    report = await run.run(120, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    assert len(report.cases) == 125  # 120 historical + 5 live, the bad row kept aside
    assert report.backfill_calls >= 120 and report.live_first_call >= report.backfill_calls
    # Codes became words, accents survived LATIN1 -> UTF-8, live changes landed on the same cases.
    assert report.cases["CS-4"]["SuppliedName"] == "Søren Kierkegård"
    assert {report.cases[f"CS-{n}"]["Status"] for n in (1, 2, 3)} == {"Closed"}
    assert report.cases["CS-121"] == {
        **report.expected()["CS-121"],
        "Priority": "High",
        "Category__c": "technical",
        "Legacy_Opened__c": "2026-12-02",
    }
    assert any(n in case["SuppliedName"] for case in report.cases.values() for n in ("Muñoz", "Groß", "Ørsted"))


@pytest.mark.timeout(240)
async def test_ehr_encounters_become_billing_lines_without_patient_identity(bootstrap: str) -> None:
    run = recipe("ehr-visits-to-billing")
    report = await run.run(16, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    assert report.encounters["enc-00001"]["meta"]["versionId"] == "2"  # finished while the hub ran...
    assert any(k.startswith("enc-00001-") for k in report.lines)  # ...and billed then
    cancelled = {e["id"] for e in report.encounters.values() if e["status"] != "finished"}
    assert cancelled and not any(line["visit"] in cancelled for line in report.lines.values())
    # The same patient gets the same pseudonym on every line; different patients, different ones.
    by_patient: dict[str, set[str]] = {}
    for e in report.encounters.values():
        for line in report.lines.values():
            if line["visit"] == e["id"]:
                by_patient.setdefault(e["subject"]["reference"], set()).add(line["patient"])
    assert all(len(p) == 1 for p in by_patient.values()) and len({next(iter(p)) for p in by_patient.values()}) == len(by_patient)
    assert not any(b"Patient/" in body or b"Oliveira" in body for body in report.raw)


@pytest.mark.timeout(300)
async def test_salesforce_and_hubspot_stay_in_step_without_echoes(bootstrap: str) -> None:
    run = recipe("salesforce-hubspot-leads")
    report = await run.run(14, bootstrap=bootstrap, prefix=unique_prefix(), quiet=4)
    assert report.problems() == []
    # Exactly one write per real change, although HubSpot reported every write the hub made.
    assert (report.hubspot_writes, report.salesforce_writes) == (16, 3)
    assert report.echoes_seen >= 16
    # The HubSpot edits reached Salesforce (the status in Salesforce's own words)...
    assert report.leads["00Q5g0000000000AAA"]["Company"] == "Renamed 0 GmbH"
    assert report.leads["00Q5g0000000001AAA"]["Status"] == "Working - Contacted"
    # ...and the Salesforce edits HubSpot, with the lead id that ties the two records together.
    contact = report.contacts["ada.10@example.com"]
    assert (contact["firstname"], contact["hs_lead_status"], contact["salesforceleadid"]) == (
        "Ada-Marie",
        "IN_PROGRESS",
        "00Q5g0000000010AAA",
    )


@pytest.mark.timeout(240)
async def test_usage_drops_over_mqtt_open_one_ticket_each(bootstrap: str) -> None:
    require_service("Mosquitto", "127.0.0.1", 1883)
    run = recipe("usage-drop-alerts")
    report = await run.run(4, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    tickets = report.by_account()
    assert "globex" not in tickets  # a 20 % dip stays under the 50 % threshold
    acme, initech = tickets["acme"][0], tickets["initech"][0]
    assert acme["subject"] == "Usage of acme fell 70%" and "usage 6.0 (6 events)" in acme["comment"]["body"]
    assert initech["subject"] == "Usage of initech fell 100%" and "against 20.0 in the window before" in initech["comment"]["body"]
    assert acme["tags"] == ["usage-drop", "account-acme"] and acme["external_id"].startswith("usage-drop:acme:")


@pytest.mark.timeout(240)
async def test_shop_orders_from_graphql_become_invoices_in_the_soap_erp(bootstrap: str) -> None:
    run = recipe("shop-orders-to-soap-erp")
    report = await run.run(30, bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    # The five orders placed while the hub ran were read on from the saved cursor.
    assert {f"SHOP-{n}" for n in range(1030, 1035)} <= {i["InvoiceNumber"] for i in report.invoices}
    assert report.erp_calls["UNKNOWN_ACCOUNT"] == sum(1 for o in report.orders if o["customer"]["id"] == run.UNKNOWN) > 0


@pytest.mark.timeout(180)
async def test_the_recipe_kit_starts_the_hub_on_new_ports_when_another_program_took_one(bootstrap: str, tmp_path: Path) -> None:
    import socket

    from examples.kit.hub import RecipeHub

    config = tmp_path / "bus.yaml"
    config.write_text(
        "kafka: {bootstrap: '${KAFKA_BOOTSTRAP}', topic_prefix: '${TOPIC_PREFIX}', session_timeout_ms: 3000}\n"
        "schema_registry: {url: embedded}\n"
        'http: {host: 127.0.0.1, port: "${HTTP_PORT}"}\n'
        'ops: {host: 127.0.0.1, port: "${OPS_PORT}"}\n'
        "inbound:\n"
        "  - {name: hooks, type: http_webhook, path: /hooks/in, emit: {schema: Payment, key: id, "
        "map: {payment_id: id, amount: amount, currency: '\"eur\"', customer_id: 'null', status: '\"ok\"', description: 'null'}}}\n"
        "routes: [{name: all, from: Payment, to: [sink]}]\n"
        "outbound: [{name: sink, type: http, url: 'http://127.0.0.1:9/in'}]\n"
    )
    hub = RecipeHub(config, {}, bootstrap=bootstrap, prefix=unique_prefix())
    squatter = socket.socket()  # another program takes the webhook port between choosing and binding
    squatter.bind(("127.0.0.1", hub.http_port))
    squatter.listen()
    taken = hub.http_port
    try:
        await hub.start()
        assert hub.http_port != taken  # started, on ports chosen again
    finally:
        squatter.close()
        assert await hub.stop() == 0


@pytest.mark.timeout(240)
async def test_online_and_store_orders_reach_the_redis_feed_once_and_cache_each_customers_last(bootstrap: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    run = recipe("orders-to-redis-feed")
    prefix = unique_prefix()
    report = await run.run(12, 12, bootstrap=bootstrap, prefix=prefix)
    assert report.problems() == []
    ids = [entry["order_id"] for entry in report.feed]
    assert len(ids) == len(set(ids)) == 23 and f"pos-{run.MISTYPED}" not in ids  # 12 online, 11 of the 12 sales
    assert {c: h["last_order"] for c, h in report.customers.items()} == {
        "207": f"shopify-{report.online[8]['id']}",
        "208": f"shopify-{report.online[9]['id']}",
        "311": f"shopify-{report.online[10]['id']}",
        "412": f"shopify-{report.online[11]['id']}",
        "c-901": "pos-S0009",
        "c-902": "pos-S0011",
    }
    online = next(e for e in report.feed if e["order_id"] == f"shopify-{report.online[0]['id']}")
    assert [line["sku"] for line in online["lines"]] == [li["sku"] for li in report.online[0]["line_items"]]
    assert report.sales_pending == 0 and report.answers["forged"] == 401


@pytest.mark.timeout(240)
async def test_bank_statements_over_sftp_reach_the_erp_import_once_to_the_cent(bootstrap: str) -> None:
    run = recipe("bank-statements-over-sftp")
    report = await run.run(bootstrap=bootstrap, prefix=unique_prefix())
    assert report.problems() == []
    got = {row["BELEGNR"]: row for row in report.imported}
    assert got["BK-20261201-001"]["BETRAG"] == "1234,56" and got["BK-20261202-004"]["BETRAG"] == "0,05"
    assert got["BK-20261201-001"]["TEXT"] == "Müller GmbH: Rechnung 2026-1001", "LATIN1 read as it is"
    assert got["BK-20261202-002"]["BETRAG"] == "12,30", "the garbled booking, as corrected"
    assert "BK-20261201-003" not in got and "BK-20261202-003" not in got, "debits stay out"
    assert len(report.imported) == 6 and report.import_files and not report.unfinished
