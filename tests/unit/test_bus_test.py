"""`bus test` and `bus routes explain`: route tests without a broker, readable diffs, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.app.cli import main

CONFIG = """\
kafka: {bootstrap: embedded}
tables:
  - name: accounts
    rows: {c-1: {number: ACC-1}}
routes:
  - name: invoice-orders
    from: Order
    enrich: [{table: accounts, key: customer_id, into: acct}]
    transform:
      schema: Invoice
      map: {invoice_id: '"INV-" + order_id', order_id: order_id, customer_id: customer_id, account: acct.number,
            currency: currency, amount: total}
    to: [books]
  - name: stock
    from: Order
    split: {items: lines, as: line}
    transform: {schema: Inventory, map: {sku: line.sku, quantity_change: -line.quantity, reference: order_id}}
    to: [wms]
  - name: broken-shape             # a table row's value is not typed: only run time can find it does not fit
    from: Order
    when: total > 1000000
    enrich: [{table: accounts, key: customer_id, into: acct}]
    transform: {schema: Invoice, map: {invoice_id: order_id, order_id: order_id, customer_id: customer_id,
                                       currency: currency, amount: acct.number}}
    to: [books]
outbound:
  - {name: books, type: http, url: "http://books/"}
  - {name: wms, type: http, url: "http://wms/"}
"""

ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "currency": "usd",
    "total": 3000,
    "lines": [{"sku": "A", "quantity": 2, "unit_price": 1000}, {"sku": "B", "quantity": 1, "unit_price": 1000}],
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bus.yaml"
    path.write_text(CONFIG)
    return path


def write_tests(tmp_path: Path, tests: list[dict]) -> Path:
    path = tmp_path / "tests.yaml"
    path.write_text(json.dumps({"tests": tests}))  # JSON is YAML
    return path


def test_passing_tests_exit_zero(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = write_tests(
        tmp_path,
        [
            {
                "name": "order becomes an invoice and two stock moves",
                "input": {"schema": "Order", "event": ORDER},
                "expect": {
                    "books": [
                        {
                            "invoice_id": "INV-o-1",
                            "order_id": "o-1",
                            "customer_id": "c-1",
                            "account": "ACC-1",
                            "currency": "usd",
                            "amount": 3000,
                            "due": None,
                            "memo": None,
                        }
                    ],
                    "wms": [
                        {"sku": "A", "quantity_change": -2, "reason": "order", "reference": "o-1"},
                        {"sku": "B", "quantity_change": -1, "reason": "order", "reference": "o-1"},
                    ],
                },
                "dead_letters": [],
            }
        ],
    )
    assert main(["test", "-c", str(config), str(tests)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "all tests passed" in out


def test_failing_test_shows_a_diff_and_exits_non_zero(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = write_tests(
        tmp_path,
        [
            {
                "name": "wrong expectation",
                "input": {"schema": "Order", "event": ORDER},
                "expect": {"wms": [{"sku": "A", "quantity_change": -3, "reason": "order", "reference": "o-1"}]},
            }
        ],
    )
    assert main(["test", "-c", str(config), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 test(s) failed" in out
    assert '-    "quantity_change": -3,' in out
    assert '+    "quantity_change": -2,' in out
    assert "route stock: matched, 2 event(s) to wms" in out  # what happened, for the reader


def test_transform_output_that_does_not_fit_its_schema_is_a_dead_letter(config: Path, tmp_path: Path) -> None:
    tests = write_tests(
        tmp_path,
        [
            {
                "name": "big orders hit the broken route",
                "input": {"schema": "Order", "event": {**ORDER, "total": 2_000_000}},
                "expect": {
                    "books": [
                        {
                            "invoice_id": "INV-o-1",
                            "order_id": "o-1",
                            "customer_id": "c-1",
                            "account": "ACC-1",
                            "currency": "usd",
                            "amount": 2_000_000,
                            "due": None,
                            "memo": None,
                        }
                    ]
                },
                "dead_letters": ["broken-shape"],
            }
        ],
    )
    assert main(["test", "-c", str(config), str(tests)]) == 0


def test_bad_test_file_is_a_config_error(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text("tests:\n  - name: fine\n    input: {amount: 1}\n  - name: no input\n    expect: {erp: 1}\n")
    assert main(["test", "-c", str(config), str(tests)]) == 2
    assert "tests.yaml:4: tests[1].input: Field required" in capsys.readouterr().err  # the line of the case, was none
    tests.write_text("tests:\n  name: not a list\n")
    assert main(["test", "-c", str(config), str(tests)]) == 2
    assert "tests.yaml:1: tests: must be a list of test cases" in capsys.readouterr().err
    tests.write_text("tests:\n  - name: tagged\n    input: !!python/object:os.system {}\n")
    assert main(["test", "-c", str(config), str(tests)]) == 2
    assert "tests.yaml:3: tests[0].input: the YAML tag !!python/object:os.system is not allowed" in capsys.readouterr().err


def test_a_key_given_twice_in_a_test_file_is_a_config_error_naming_its_lines(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # YAML keeps the last `expect:`: the first expectation was never checked, and the test passed on the second.
    tests = tmp_path / "tests.yaml"
    tests.write_text("tests:\n  - name: big\n    input: {amount: 1}\n    expect: {erp: 1}\n    expect: {erp: 0}\n")
    assert main(["test", "-c", str(config), str(tests)]) == 2
    assert "tests.yaml:5: tests[0].expect: 'expect' is given twice here (lines 4 and 5)" in capsys.readouterr().err


def test_routes_explain(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"schema": "Order", "event": {**ORDER, "customer_id": "c-404", "lines": []}}))
    assert main(["routes", "explain", "-c", str(config), str(event)]) == 0
    out = capsys.readouterr().out
    assert (
        "  route invoice-orders: matched, 1 event(s) to books\n"
        "  route stock: dropped (split produced no elements)\n"
        "  route broken-shape: condition false\n"
        "    -> books: Invoice"
    ) in out
    assert '"account": null' in out


def test_quickstart_route_tests_pass() -> None:
    root = Path(__file__).resolve().parents[2]
    assert main(["test", "-c", str(root / "examples/quickstart/bus.yaml"), str(root / "examples/quickstart/tests.yaml")]) == 0


def test_tests_can_assert_what_an_adapter_sends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(
        CONFIG.replace(
            '  - {name: books, type: http, url: "http://books/"}',
            '  - {name: books, type: http, url: "http://books/$${invoice_id}", headers: {X-Account: "$${account}"},'
            " body: {ref: invoice_id, cents: amount * 100}}",
        )
    )
    sent = {"url": "http://books/INV-o-1", "headers.X-Account": "ACC-1", "body": {"ref": "INV-o-1", "cents": 300000}}
    case = {"name": "what the books adapter sends", "input": {"schema": "Order", "event": ORDER}}
    assert main(["test", "-c", str(config), str(write_tests(tmp_path, [{**case, "sent": {"books": [sent]}}]))]) == 0
    assert main(["test", "-c", str(config), str(write_tests(tmp_path, [{**case, "sent": {"books": [{"body": {"ref": "x"}}]}}]))]) == 1
    out = capsys.readouterr().out
    assert '-      "ref": "x"' in out and '"cents": 300000' in out
    assert 'url: "http://books/INV-o-1"' in out  # explained, for the reader


@pytest.mark.parametrize(
    ("content", "said", "code"),
    [
        (b"not json", "is not JSON: Expecting value", 2),
        (b"\xff\xfe{}", "is not JSON", 2),
        (b"[1, 2]", 'must hold a JSON object: the event, or {"schema": ..., "event": {...}}', 2),
        (b'{"schema": "Order", "event": [1]}', "event: Input should be a valid dictionary", 2),
        (b'{"schema": "Ordr", "event": {}}', "no schema named 'Ordr' (schemas: ", 1),
        (None, "cannot read", 2),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "event-not-an-object", "unknown-schema", "missing"],
)
def test_routes_explain_of_an_event_file_it_cannot_use_says_why(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, said: str, code: int
) -> None:
    """Each was a traceback: JSONDecodeError, UnicodeDecodeError, AttributeError, ValidationError, KeyError, FileNotFoundError."""
    event = tmp_path / "event.json"
    if content is not None:
        event.write_bytes(content)
    assert main(["routes", "explain", "-c", str(config), str(event)]) == code
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err
