"""The config checker: a config that loads means what it says (every field reference, type and
mapping checked against the schema in scope), reported all at once by `bus validate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from bus.adapter_api import AdapterConfig, AdapterRegistry, EmitSpec, Inbound
from bus.app.cli import main
from bus.config.loader import load_config
from bus.errors import ConfigError
from schemas.catalog import SchemaCatalog

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of the quickstart, to edit one thing at a time."""
    for name in ("bus.yaml", "payment-event.sample.json"):
        shutil.copy(QUICKSTART / name, tmp_path / name)
    return tmp_path / "bus.yaml"


def _edit(config: Path, old: str, new: str) -> int:
    """Replace ``old`` (which must be there once) and return the 1-based line of the change."""
    text = config.read_text()
    assert text.count(old) == 1, old
    config.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1 + old[: len(old) - len(old.lstrip("\n"))].count("\n")


def _validate(
    config: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, list[dict[str, object]], list[dict[str, object]]]:
    code = main(["validate", "--json", *extra, "-c", str(config)])
    report = json.loads(capsys.readouterr().out)
    return code, report["errors"], report["warnings"]


def test_the_quickstart_is_valid_with_no_warnings_even_strictly(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _validate(quickstart, capsys, "--strict") == (0, [], [])


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        pytest.param(
            "        status: data.object.status",
            "        statuss: data.object.status",
            "inbound[0].emit.map.statuss",
            "schema Payment has no field 'statuss'; did you mean 'status'?",
            id="emit.map key",
        ),
        pytest.param(
            "      id: id ",
            "      id: data ",
            "inbound[0].emit.id",
            "'data' is an object: an event's id is one value, text or a number",
            id="emit.id an object",
        ),
        pytest.param(
            "        status: data.object.status",
            "        status: data.object.statsu",
            "inbound[0].emit.map.status",
            "has no field 'statsu'; did you mean 'status'?",
            id="emit.map value path, with the payload's shape declared",
        ),
        pytest.param(
            '    when: status == "failed"',
            '    when: statuz == "failed"',
            "routes[1].when",
            "schema Payment has no field 'statuz'; did you mean 'status'?",
            id="when field",
        ),
        pytest.param(
            "      customer: customer_id\n  - name: support",
            "      customer: customer_idd\n  - name: support",
            "outbound[0].body.customer",
            "schema Payment has no field 'customer_idd'; did you mean 'customer_id'?",
            id="body field",
        ),
        pytest.param(
            "    url: ${ERP_URL:-http://127.0.0.1:8901/erp/payments}",
            '    url: ${ERP_URL:-http://127.0.0.1:8901/erp/payments}\n    headers: {X-Customer: "$${customer_idd}"}',
            "outbound[0].headers.X-Customer",
            "has no field 'customer_idd'; did you mean 'customer_id'?",
            id="header template",
        ),
        pytest.param(
            '    when: status == "failed"',
            "    when: status == 3",
            "routes[1].when",
            "compares a string with an integer: == is never true",
            id="string field against a number",
        ),
        pytest.param(
            "    to: [support]",
            "    to: [suport]",
            "routes[1].to[0]",
            "no outbound adapter named 'suport'; did you mean 'support'?",
            id="subscriber name",
        ),
    ],
)
def test_one_edit_to_the_quickstart_is_refused_with_line_and_suggestion(
    quickstart: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, field: str, says: str
) -> None:
    line = _edit(quickstart, old, new)
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2
    assert [e for e in errors if e["field"] == field and says in str(e["message"])], errors
    [error] = [e for e in errors if e["field"] == field]
    assert error["file"] == str(quickstart) and error["line"] == line + new.count("\n") * (field.startswith("outbound[0].headers"))
    # Text output too: file:line, field, message.
    assert main(["validate", "-c", str(quickstart)]) == 2
    assert f"{quickstart}:{error['line']}: {field}: " in capsys.readouterr().err


def test_an_enum_symbol_that_does_not_exist(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schemas = quickstart.parent / "schemas"
    schemas.mkdir()
    (schemas / "Shipment.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Shipment",
                "namespace": "acme",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "state", "type": {"type": "enum", "name": "ShipmentState", "symbols": ["PACKED", "SHIPPED", "DELIVERED"]}},
                ],
            }
        )
    )
    _edit(quickstart, "schema_registry:", "schema_dirs: [schemas]\nschema_registry:")
    _edit(
        quickstart,
        "\noutbound:",
        "\n  - name: delivered\n    from: Shipment\n"
        '    when: state == "DELIVERD" or state in ["PACKED", "SHIPED"]\n    to: [support]\n\noutbound:',
    )
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2
    messages = [str(e["message"]) for e in errors if e["field"] == "routes[2].when"]
    assert any("'DELIVERD' is not a symbol of ShipmentState; did you mean 'DELIVERED'?" in m for m in messages), errors
    assert any("'SHIPED' is not a symbol of ShipmentState; did you mean 'SHIPPED'?" in m for m in messages), errors
    line = quickstart.read_text().splitlines().index('    when: state == "DELIVERD" or state in ["PACKED", "SHIPED"]') + 1
    assert {e["line"] for e in errors if e["field"] == "routes[2].when"} == {line}


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    return path


BASE = """\
inbound:
  - name: orders
    type: http_webhook
    path: /orders
    emit:
      schema: Order
      map: {order_id: id, customer_id: customer, currency: currency, total: total, lines: lines}
routes:
{routes}
outbound:
  - {name: books, type: http, url: "http://books/"}
"""


@pytest.mark.parametrize(
    ("route", "says"),
    [
        ("when: currency + 1 > 2", "+ cannot combine a string and an integer: convert with str(...) first"),
        ('when: currency * 2 == "x"', "* cannot combine a string and an integer: it is arithmetic"),
        ("when: decimal(total) + 0.5 > 1", "+ mixes a decimal (money) with a float"),
        ('when: lower(total) == "x"', "lower() takes string as argument 1, not an integer"),
        ("when: total", "a condition must be true or false, and 'total' is an integer"),
        ('when: len(customer_id) > 0 and customer_id + "!" == "x!"', "customer_id may be null (a string or null) and + fails on null"),
        ('when: $idd == "x"', "unknown metadata $idd; did you mean $id?"),
        ('when: lines[0].skux == "A"', "record OrderLine has no field 'skux'; did you mean 'sku'?"),
        ('when: currency.code == "usd"', "'code' is read from a string, which has no fields"),
        ('when: upper(currency, 2) == "USD"', "upper() takes 1 argument(s), given 2"),
    ],
)
def test_expression_types_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str, says: str) -> None:
    config = _config(tmp_path, BASE.replace("{routes}", f"  - name: r\n    from: Order\n    {route}\n    to: [books]"))
    code, errors, _ = _validate(config, capsys)
    assert code == 2 and any(says in str(e["message"]) for e in errors), errors


@pytest.mark.parametrize(
    "route",
    [
        'when: customer_id != null and customer_id + "!" == "x!"',  # a null check before the use
        'when: exists(customer_id) and customer_id + "!" == "x!"',
        'when: coalesce(customer_id, "") + "!" == "x!"',
        'when: total * 2 > 10 and currency in ["usd", "eur"] and lines[0].quantity > 1',
        'when: timestamp("2026-01-01") + duration("1d") > now()',
        'when: decimal(total) + decimal("0.5") > decimal(1)',
    ],
)
def test_expressions_that_are_sound_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str) -> None:
    config = _config(tmp_path, BASE.replace("{routes}", f"  - name: r\n    from: Order\n    {route}\n    to: [books]"))
    assert _validate(config, capsys) == (0, [], [])


def test_mappings_must_fit_their_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("currency: currency, ", "").replace(
        "{routes}",
        """  - name: r
    from: Order
    transform:
      schema: Invoice
      map: {invoice_id: order_id, order_id: order_id, customer_id: customer_id, currency: currency, amount: currency, amout: total}
    to: [books]""",
    )
    code, errors, _ = _validate(_config(tmp_path, text), capsys)
    found = {(e["field"], str(e["message"])) for e in errors}
    assert code == 2
    assert any(
        f == "routes[0].transform.map.amout" and "schema Invoice has no field 'amout'; did you mean 'amount'?" in m for f, m in found
    )
    assert any(f == "routes[0].transform.map.amount" and "'currency' is a string, and the field is an integer" in m for f, m in found)
    # currency is unmapped at the inbound: the Order field has no default, so every event would be refused.
    assert any(f == "inbound[0].emit.map" and "schema Order.currency has no default and is not mapped" in m for f, m in found), found


def test_a_nullable_value_into_a_required_field_needs_a_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = """  - name: r
    from: Order
    transform:
      schema: Invoice
      map: {invoice_id: order_id, order_id: order_id, customer_id: customer_id, currency: customer_id, amount: total}
      {defaults}
    to: [books]"""
    code, errors, _ = _validate(_config(tmp_path, BASE.replace("{routes}", route.replace("{defaults}", ""))), capsys)
    assert code == 2 and any(e["field"] == "routes[0].transform.map.currency" and "may be null" in str(e["message"]) for e in errors)
    fixed = route.replace("{defaults}", 'defaults: {currency: "usd"}')
    assert _validate(_config(tmp_path, BASE.replace("{routes}", fixed)), capsys) == (0, [], [])


def test_warnings_say_what_never_happens_and_strict_refuses_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = """  - name: never
    from: Order
    when: 1 == 2
    to: [books]
  - name: always
    from: Order
    when: 2 > 1
    to: [books]
  - name: nobody-sends-payments
    from: Payment
    to: [books]"""
    text = BASE.replace("{routes}", routes).replace(", lines: lines}", "}") + '  - {name: idle, type: http, url: "http://idle/"}\n'
    config = _config(tmp_path, text)
    code, errors, warnings = _validate(config, capsys)
    assert (code, errors) == (0, [])
    said = {(w["field"], str(w["message"])) for w in warnings}
    assert ("routes[0].when", "'1 == 2' is never true: this route can never match") in said
    assert ("routes[1].when", "'2 > 1' is always true: leave `when` out to match every event") in said
    assert ("routes[2].from", "no inbound adapter or route produces Payment events here, so this route never runs") in said
    assert ("outbound[1].name", "no route sends to outbound 'idle': it never delivers anything") in said
    assert any(f == "inbound[0].emit.map" and "lines of schema Order set by no inbound mapping" in m for f, m in said), said
    assert main(["validate", "--strict", "-c", str(config)]) == 2
    assert "is never true: this route can never match" in capsys.readouterr().err


def test_every_error_at_once_in_file_and_line_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = """  - name: a
    from: Order
    when: totl > 1
    to: [bookz]
  - name: b
    from: Order
    when: currncy == "usd"
    to: [books]"""
    text = BASE.replace("{routes}", routes) + '  - {name: two, type: http, url: "http://x/", body: {a: custmer_id}, timeout_s: -1}\n'
    code, errors, _ = _validate(_config(tmp_path, text), capsys)
    assert code == 2
    assert [e["field"] for e in errors] == ["routes[0].when", "routes[0].to[0]", "routes[1].when", "outbound[1].timeout_s"]
    lines = [e["line"] for e in errors]
    assert lines == sorted(lines)  # type: ignore[type-var]


def test_a_json_schema_payload_shape_checks_the_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "order.schema.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["id", "total", "currency", "lines"],
                "properties": {
                    "id": {"type": "string"},
                    "customer": {"$ref": "#/$defs/customer"},
                    "currency": {"type": "string"},
                    "total": {"type": "integer"},
                    "lines": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
                    "status": {"type": "string", "enum": ["open", "paid"]},
                },
                "$defs": {"customer": {"type": "object", "properties": {"id": {"type": "string"}}}},
            }
        )
    )
    text = BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}").replace(
        "      map: {order_id: id, customer_id: customer,",
        "      payload: {json_schema: order.schema.json}\n      map: {order_id: id, customer_id: customer.idd,",
    )
    code, errors, _ = _validate(_config(tmp_path, text), capsys)
    assert code == 2
    assert [(e["field"], str(e["message"]).split(" (")[0]) for e in errors] == [
        ("inbound[0].emit.map.customer_id", "this object has no field 'idd'; did you mean 'id'?")
    ]
    assert _validate(_config(tmp_path, text.replace("customer.idd", "customer.id")), capsys) == (0, [], [])


def test_strict_names_the_payload_paths_it_could_not_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}"))
    assert _validate(config, capsys) == (0, [], [])
    code, errors, _ = _validate(config, capsys, "--strict")
    assert code == 2
    [error] = errors
    assert error["field"] == "inbound[0].emit.map" and "5 payload path(s) not checked (currency, customer, id, lines, total)" in str(
        error["message"]
    )


def test_outbound_expressions_of_every_adapter_family_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outbound = """  - {name: books, type: http, url: "http://books/$${ordr_id}", method_when: {DELETE: 'stauts == "x"'}}
  - {name: ledger, type: sql, dsn: "postgresql://u@h/db", table: t, columns: {id: ordr_id}, key: [id], delete_when: 'stats == "x"'}
  - {name: feed, type: kafka, bootstrap: "k:9092", topic: "orders.$${curency}", key: custmer_id}
  - {name: queue, type: amqp, url: "amqp://guest:guest@h/", exchange: x, routing_key: "o.$${stat}"}
"""
    text = (
        BASE.replace("{routes}", "  - {name: r, from: Order, to: [books, ledger, feed, queue]}").split("outbound:")[0]
        + "outbound:\n"
        + outbound
    )
    code, errors, _ = _validate(_config(tmp_path, text), capsys)
    assert code == 2
    fields = {e["field"] for e in errors if "has no field" in str(e["message"])}
    assert fields == {
        "outbound[0].url",
        "outbound[0].method_when.DELETE",
        "outbound[1].columns.id",
        "outbound[1].delete_when",
        "outbound[2].topic",
        "outbound[2].key",
        "outbound[3].routing_key",
    }, errors


def test_an_expression_holding_a_secret_is_quoted_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDONYM_KEY", "s3cr3t-pseudonym-key")
    route = '  - name: r\n    from: Order\n    when: hmac_sha256(customer_id, "${PSEUDONYM_KEY}") == 3\n    to: [books]'
    code, errors, _ = _validate(_config(tmp_path, BASE.replace("{routes}", route)), capsys)
    assert code == 2 and errors
    assert "s3cr3t-pseudonym-key" not in json.dumps(errors)
    assert "compares a string with an integer" in str(errors[0]["message"])


OPENAPI = """\
openapi: 3.1.0
info: {title: Shop, version: "1"}
paths:
  /orders:
    post:
      operationId: createOrder
      requestBody: {$ref: "#/components/requestBodies/Order"}
      responses: {"201": {description: created}}
webhooks:
  orderCreated:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Order"}
      responses: {"200": {description: ok}}
components:
  requestBodies:
    Order:
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Order"}
  schemas:
    Order:
      type: object
      required: [id, currency, total, lines]
      properties:
        id: {type: string}
        customer: {type: object, properties: {id: {type: string}}}
        currency: {type: string}
        total: {type: integer}
        lines: {type: array, items: {type: object, additionalProperties: true}}
"""


@pytest.mark.parametrize("operation", ["createOrder", "POST /orders", "orderCreated"])
def test_an_openapi_operation_is_a_payload_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str], operation: str) -> None:
    (tmp_path / "shop.openapi.yaml").write_text(OPENAPI)
    shape = f"      payload: {{openapi: {{document: shop.openapi.yaml, operation: {operation!r}}}}}\n"
    text = BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}").replace("      map:", shape + "      map:")
    assert _validate(_config(tmp_path, text.replace("customer_id: customer,", "customer_id: customer.id,")), capsys) == (0, [], [])
    code, errors, _ = _validate(_config(tmp_path, text.replace("customer_id: customer,", "customer_id: customer.idd,")), capsys)
    assert code == 2 and "has no field 'idd'; did you mean 'id'?" in str(errors[0]["message"])


def test_an_openapi_operation_that_does_not_exist_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "shop.openapi.yaml").write_text(OPENAPI)
    shape = "      payload: {openapi: {document: shop.openapi.yaml, operation: creatOrder}}\n"
    text = BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}").replace("      map:", shape + "      map:")
    code, errors, _ = _validate(_config(tmp_path, text), capsys)
    assert code == 2
    assert errors[0]["field"] == "inbound[0].emit.payload.openapi.operation"
    assert "has no operation 'creatOrder'; did you mean 'createOrder'?" in str(errors[0]["message"])


POLL = """\
inbound:
  - name: crm
    type: http_poll
    url: https://crm.example.com/api/contacts
    records: data
{since}    emit: {{schema: Customer, id: {id}, key: id, map: {{customer_id: id, email: email, name: name}}}}
routes:
  - {{name: r, from: Customer, to: [books]}}
outbound:
  - {{name: books, type: http, url: "http://books/"}}
"""


def test_http_poll_needs_a_watermark_and_a_version_aware_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    since = "    since: {param: updated_since, field: updated_at, id: id}\n"
    code, errors, _ = _validate(_config(tmp_path, POLL.format(since="", id="id")), capsys)
    assert code == 2 and [e["field"] for e in errors] == ["inbound[0].since"]  # each poll would publish everything again
    code, errors, warnings = _validate(_config(tmp_path, POLL.format(since=since, id="id")), capsys)
    assert (code, errors) == (0, [])
    [warning] = [w for w in warnings if w["field"] == "inbound[0].emit.id"]
    assert "an updated record gets the id of its first version" in str(warning["message"])
    assert """'id + "@" + updated_at'""" in str(warning["message"])
    code, errors, warnings = _validate(_config(tmp_path, POLL.format(since=since, id="'id + \"@\" + updated_at'")), capsys)
    assert (code, errors) == (0, []) and not [w for w in warnings if w["field"] == "inbound[0].emit.id"]


def test_index_is_a_number_in_a_split_route_and_null_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = """  - name: r
    from: Order
    split: {items: lines, as: line}
    transform: {schema: Inventory, map: {sku: line.sku, quantity_change: -line.quantity, reference: 'order_id + "#" + str($index + 1)'}}
    to: [books]"""
    assert _validate(_config(tmp_path, BASE.replace("{routes}", split)), capsys) == (0, [], [])
    plain = "  - name: r\n    from: Order\n    when: $index + 1 > 1\n    to: [books]"
    code, errors, _ = _validate(_config(tmp_path, BASE.replace("{routes}", plain)), capsys)
    assert code == 2 and "$index may be null" in str(errors[0]["message"])


def test_aggregate_sums_need_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = """  - name: r
    from: Order
    when: customer_id != null
    split: {items: lines, as: line}
    aggregate: {count: 10, fields: {units: sum(line.sku), n: count()}}
    transform:
      schema: UsageMetric
      map: {account_id: key, metric: '"units"', value: "1.0", count: n, window_start: "null", window_end: "null"}
    to: [books]"""
    code, errors, _ = _validate(_config(tmp_path, BASE.replace("{routes}", route)), capsys)
    assert code == 2
    assert [(e["field"], str(e["message"])) for e in errors] == [
        ("routes[0].aggregate.fields.units", "sum() adds numbers, and 'line.sku' is a string")
    ]


def test_headers_read_where_no_source_sends_any_are_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    webhook = BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}").replace(
        "customer_id: customer,", """customer_id: '$headers["x-customer"]',"""
    )
    code, errors, warnings = _validate(_config(tmp_path, webhook), capsys)
    assert (code, errors) == (0, []) and not [w for w in warnings if "$headers" in str(w["message"])]
    queue = webhook.replace(
        "type: http_webhook\n    path: /orders", "type: amqp\n    url: amqp://guest:guest@localhost/\n    queue: orders"
    )
    code, errors, warnings = _validate(_config(tmp_path, queue), capsys)
    [warning] = [w for w in warnings if "$headers" in str(w["message"])]
    assert warning["field"] == "inbound[0].emit" and "the amqp inbound has no request headers" in str(warning["message"])


class BrokenCheckConfig(AdapterConfig):
    type: Literal["broken_check"] = "broken_check"
    emit: EmitSpec

    def config_warnings(self) -> list[tuple[tuple[str | int, ...], str]]:
        raise KeyError("a field the check assumed")


class BrokenCheck(Inbound[BrokenCheckConfig]):
    Config: ClassVar[type[BrokenCheckConfig]] = BrokenCheckConfig
    summary: ClassVar[str] = "an adapter whose own config check has a bug"


def test_an_adapter_whose_own_check_breaks_is_a_config_error_naming_it(tmp_path: Path) -> None:
    registry = AdapterRegistry.from_entry_points().clone()
    registry.register("broken_check", BrokenCheck)
    catalog = SchemaCatalog.load()
    text = BASE.replace("{routes}", "  - {name: r, from: Order, to: [books]}").replace(
        "type: http_webhook\n    path: /orders", "type: broken_check"
    )
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, text), registry, known_schemas=lambda h: catalog.parsed())
    assert "inbound[0]: the broken_check adapter's own config check failed: KeyError('a field the check assumed')" in str(info.value)


@pytest.mark.parametrize(
    ("drain", "grace", "warned"), [("20s", "45", False), ("40s", "45", True), ("40s", None, False), ("40s", "90", False)]
)
def test_a_drain_that_a_stop_could_not_finish_within_the_pods_grace_period_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, drain: str, grace: str | None, warned: bool
) -> None:
    """The chart passes the pod's grace period (BUS_TERMINATION_GRACE_S); a subscriber whose
    delivery.drain_at_stop, with the stop's other waits, outlasts it would be killed mid-drain."""
    routes = "  - name: all\n    from: Order\n    to: [books]"
    books = f'url: "http://books/", delivery: {{drain_at_stop: {drain}}}}}'
    text = BASE.replace("{routes}", routes).replace('url: "http://books/"}', books)
    if grace is None:
        monkeypatch.delenv("BUS_TERMINATION_GRACE_S", raising=False)
    else:
        monkeypatch.setenv("BUS_TERMINATION_GRACE_S", grace)
    code, errors, warnings = _validate(_config(tmp_path, text), capsys)
    assert (code, errors) == (0, [])
    said = [str(w["message"]) for w in warnings if w["field"] == "outbound[0].delivery.drain_at_stop"]
    if warned:
        assert said == [
            "a stop may take 63s (the sources' and the webhook server's waits, 18s, this 40s drain, then about 5s to commit), "
            "longer than the 45s the pod is given (terminationGracePeriodSeconds): it would be killed before its deliveries "
            "drain; lower drain_at_stop or raise terminationGracePeriodSeconds"
        ], said
    else:
        assert said == []


def test_a_name_making_a_topic_longer_than_kafka_takes_is_said_at_its_field(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Topic names are the prefix and a name from the config: one past Kafka's 249 characters
    passed `bus validate`, and the hub could not create its topics at start."""
    long_name = "erp-" + "x" * 240
    text = quickstart.read_text().replace("  - name: erp\n", f"  - name: {long_name}\n").replace("to: [erp]", f"to: [{long_name}]")
    quickstart.write_text(text)
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2 and [e["field"] for e in errors] == ["outbound[0].name"], errors
    assert "makes the topic bus.deliver.erp-xxxx" in str(errors[0]["message"]) and "256 characters long" in str(errors[0]["message"])
    assert "Kafka takes at most 249" in str(errors[0]["message"])

    _edit(quickstart, "  partitions: 3\n", f"  partitions: 3\n  topic_prefix: {'p' * 240}\n")
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2 and [e["field"] for e in errors] == ["kafka.topic_prefix"], errors  # said once, not at every name


def test_two_inbounds_on_one_path_are_refused_at_the_second(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both passed `bus validate`; the second was refused only as it started, while the first
    took its senders' requests."""
    text = quickstart.read_text()
    start = text.index("  - name: payments\n")
    end = text.index("routes:")
    quickstart.write_text(text[:end] + text[start:end].replace("name: payments", "name: payments-copy", 1) + text[end:])
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2 and [(e["field"], e["message"]) for e in errors] == [
        ("inbound[1].path", "POST /hooks/payments is served by inbound 'payments' already: give each its own path")
    ], errors


@pytest.mark.parametrize("path", ["/hooks/../payments", "/hooks/./payments", "/hooks//payments", "/hooks/.."])
def test_a_webhook_path_no_sender_can_reach_is_refused(quickstart: Path, capsys: pytest.CaptureFixture[str], path: str) -> None:
    _edit(quickstart, "path: /hooks/payments", f"path: {path}")
    code, errors, _ = _validate(quickstart, capsys)
    assert code == 2 and [e["field"] for e in errors] == ["inbound[0].path"], errors
    assert "segment, which HTTP clients and proxies resolve or merge away" in str(errors[0]["message"])
