"""`bus validate` on broken configs: every error names file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.adapter_api import AdapterRegistry
from bus.app.cli import main
from bus.config.loader import load_config
from bus.errors import ConfigError
from schemas.catalog import SchemaCatalog

KNOWN = (
    "(known: Account, Customer, Inventory, Invoice, Lead, Order, PatientVisit, Payment, Product, Refund, Subscription, Ticket, UsageMetric)"
)

GOOD = """\
kafka:
  bootstrap: embedded
inbound:
  - name: shop
    type: http_webhook
    path: /hooks/shop
    emit:
      schema: Order
      key: id
      map: {order_id: id, currency: currency, total: total}
routes:
  - name: all-orders
    from: Order
    to: [erp]
outbound:
  - name: erp
    type: http
    url: http://erp.local/orders
"""


def _issues(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "bus.yaml"
    path.write_text(textwrap.dedent(text))
    catalog = SchemaCatalog.load()
    with pytest.raises(ConfigError) as info:
        load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed(), env=env or {})
    return [str(issue) for issue in info.value.issues]


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(GOOD)
    catalog = SchemaCatalog.load()
    loaded = load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed())
    assert [c.name for c in loaded.inbound] == ["shop"]
    assert loaded.hub.routes[0].from_ == "Order"


def test_unknown_adapter_type(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("type: http\n", "type: htttp\n"))
    assert len(issues) == 1
    assert issues[0].endswith(
        "bus.yaml:17: outbound[0].type: unknown outbound adapter type 'htttp'; "
        "did you mean 'http'? (known: amqp, email, file, graphql, http, kafka, mqtt, nats, redis, sftp, soap, sql, webhook)"
    )


def test_inbound_type_used_as_outbound(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("type: http\n", "type: http_webhook\n"))
    assert "bus.yaml:17: outbound[0].type: unknown outbound adapter type 'http_webhook'" in issues[0]


def test_missing_field(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("    url: http://erp.local/orders\n", ""))
    assert issues == [f"{tmp_path}/bus.yaml:16: outbound[0].url: Field required"]


def test_unknown_field(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("    path: /hooks/shop\n", "    path: /hooks/shop\n    pth: /x\n"))
    assert issues == [f"{tmp_path}/bus.yaml:7: inbound[0].pth: Extra inputs are not permitted"]


def test_bad_route_reference(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("to: [erp]", "to: [erp, crm]"))
    assert issues == [f"{tmp_path}/bus.yaml:14: routes[0].to[1]: no outbound adapter named 'crm' (known: erp)"]


def test_unknown_schema_in_route_and_emit(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("from: Order", "from: Ordr").replace("schema: Order", "schema: Oder"))
    assert f"{tmp_path}/bus.yaml:13: routes[0].from: unknown schema 'Ordr'; did you mean 'Order'? {KNOWN}" in issues
    assert f"{tmp_path}/bus.yaml:8: inbound[0].emit.schema: unknown schema 'Oder'; did you mean 'Order'? {KNOWN}" in issues


def test_bad_condition_points_at_position(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("    to: [erp]", "    when: total >= and currency\n    to: [erp]"))
    assert issues == [f"{tmp_path}/bus.yaml:14: routes[0].when: unexpected 'and' at position 10: 'total >= and currency'"]


def test_bad_mapping_expression(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("total: total}", "total: total +}"))
    assert len(issues) == 1
    assert issues[0].startswith(f"{tmp_path}/bus.yaml:10: inbound[0].emit.map: total: unexpected end of expression")


def test_wrong_type(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("bootstrap: embedded", "bootstrap: embedded\n  partitions: lots"))
    assert issues == [f"{tmp_path}/bus.yaml:3: kafka.partitions: Input should be a valid integer, unable to parse string as an integer"]


def test_duplicate_adapter_name(tmp_path: Path) -> None:
    text = GOOD + "  - name: erp\n    type: http\n    url: http://other/\n"
    issues = _issues(tmp_path, text)
    assert issues == [f"{tmp_path}/bus.yaml:19: outbound[1].name: outbound adapter name 'erp' is used twice"]


def test_missing_env_var_names_line_and_never_value(tmp_path: Path) -> None:
    issues = _issues(tmp_path, GOOD.replace("http://erp.local/orders", "${ERP_URL}"))
    assert issues == [
        f"{tmp_path}/bus.yaml:18: outbound[0].url: environment variable ERP_URL is not set "
        "(use ${ERP_URL:-default}; for a template field write $${ERP_URL})"
    ]


def test_env_and_secret_file_interpolation(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    text = GOOD.replace("    path: /hooks/shop\n", f"    path: /hooks/shop\n    auth: {{type: api_key, keys: ['${{file:{secret}}}']}}\n")
    text = text.replace("http://erp.local/orders", "${ERP_URL:-http://fallback/}")
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    catalog = SchemaCatalog.load()
    loaded = load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed(), env={})
    assert loaded.outbound[0].url == "http://fallback/"  # type: ignore[attr-defined]
    assert loaded.inbound[0].auth.keys[0].get_secret_value() == "s3cret"  # type: ignore[attr-defined]
    assert "s3cret" not in repr(loaded.inbound[0])


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        ("/dev/zero", "secret file /dev/zero holds more than 1,000,000 bytes"),  # was read until memory ran out
        ("BINARY", "is not UTF-8 text"),  # a UnicodeDecodeError traceback out of bus validate
        ("FOLDER", "cannot read secret file"),
    ],
)
def test_a_secret_file_that_is_no_secret_is_a_config_error(tmp_path: Path, secret: str, said: str) -> None:
    binary, folder = tmp_path / "key.der", tmp_path / "secrets"
    binary.write_bytes(b"\x30\x82\xff\xfe")
    folder.mkdir()
    where = {"BINARY": str(binary), "FOLDER": str(folder)}.get(secret, secret)
    text = GOOD.replace("    path: /hooks/shop\n", f"    path: /hooks/shop\n    auth: {{type: api_key, keys: ['${{file:{where}}}']}}\n")
    issues = _issues(tmp_path, text)
    assert any("bus.yaml:7: inbound[0].auth.keys[0]: " in issue and said in issue for issue in issues), issues


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    issues = _issues(tmp_path, "kafka:\n  bootstrap: [oops\nroutes: []\n")
    assert issues[0].startswith(f"{tmp_path}/bus.yaml:3: <top level>: YAML syntax:")


def test_a_value_that_starts_with_a_backtick_is_told_to_be_quoted(tmp_path: Path) -> None:
    """YAML keeps ` for itself; an expression that starts with a field name between backticks
    (`Order ID`) is a syntax error that only YAML's own words described."""
    issues = _issues(tmp_path, "inbound:\n  - name: a\n    emit: {key: `Order ID`}\n")
    assert issues[0].startswith(f"{tmp_path}/bus.yaml:3: <top level>: YAML syntax:")
    assert "must be in quotes" in issues[0]
    assert "must be in quotes" not in _issues(tmp_path, "kafka:\n  bootstrap: [oops\nroutes: []\n")[0]


def test_folder_of_files_merges_lists_and_keeps_each_files_lines(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kafka: {bootstrap: embedded}\noutbound:\n  - name: erp\n    type: http\n    url: http://x/\n")
    (tmp_path / "b.yaml").write_text("routes:\n  - name: r\n    from: Order\n    to: [erp, nope]\n")
    catalog = SchemaCatalog.load()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed())
    assert [str(i) for i in info.value.issues] == [f"{tmp_path}/b.yaml:4: routes[0].to[1]: no outbound adapter named 'nope' (known: erp)"]


def test_same_key_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kafka: {bootstrap: embedded}\n")
    (tmp_path / "b.yaml").write_text("\nkafka: {bootstrap: other:9092}\n")
    catalog = SchemaCatalog.load()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed())
    assert [str(i) for i in info.value.issues] == [f"{tmp_path}/b.yaml:2: kafka: defined in more than one file"]


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["validate", "-c", str(good)]) == 0
    assert "valid (1 inbound, 1 route(s), 1 outbound" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("to: [erp]", "to: [crm]").replace("type: http\n", "type: nope\n"))
    assert main(["validate", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration (2 error(s))" in err
    assert "bad.yaml:17: outbound[0].type: unknown outbound adapter type 'nope'" in err
    assert "bad.yaml:14: routes[0].to[0]: no outbound adapter named 'crm' (known: erp)" in err


def test_a_config_file_past_any_configs_size_is_refused_unread(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", "/dev/zero"]) == 2  # read until memory ran out
    assert "/dev/zero: <top level>: the file holds more than 50,000,000 bytes: not a config" in capsys.readouterr().err


def test_cli_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: <top level>: file not found" in capsys.readouterr().err


def test_examples_validate() -> None:
    root = Path(__file__).resolve().parents[2]
    assert main(["validate", "-c", str(root / "examples/quickstart/bus.yaml")]) == 0


def test_route_pattern_errors(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    to: [erp]",
        """    to: [erp]
  - name: split-without-transform
    from: Order
    split: {items: lines}
    to: [erp]
  - name: map-and-rename
    from: Order
    transform: {map: {a: b}, rename: {x: y}}
    dedup: {ttl: soon}
    to: [erp]""",
    )
    path = f"{tmp_path}/bus.yaml"
    assert _issues(tmp_path, text) == [
        f"{path}:15: routes[1]: split needs a transform with a schema: the elements are not events of the route's `from` schema",
        f"{path}:21: routes[2].transform: rename and drop apply when copying fields; with map, list the output fields in map",
        f"{path}:22: routes[2].dedup.ttl: invalid duration 'soon' (examples: 500ms, 90s, 5m, 1h30m, 2d)",
    ]


def test_route_reference_errors(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    to: [erp]",
        """    to: [erp]
  - name: bad-schema-and-table
    from: Order
    enrich: [{table: accounts, key: customer_id, into: acct}]
    transform: {schema: Invoce, map: {invoice_id: order_id}}
    to: [erp]""",
    )
    path = f"{tmp_path}/bus.yaml"
    assert _issues(tmp_path, text) == [
        f"{path}:17: routes[1].enrich[0].table: no table named 'accounts' (known: none defined)",
        f"{path}:18: routes[1].transform.schema: unknown schema 'Invoce'; did you mean 'Invoice'? {KNOWN}",
    ]


def test_double_dollar_keeps_a_template_field_from_interpolation(tmp_path: Path) -> None:
    text = GOOD.replace("http://erp.local/orders", "http://erp.local/$${customer_id}/${HOST_PART:-x}")
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    catalog = SchemaCatalog.load()
    loaded = load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed(), env={})
    assert loaded.outbound[0].url == "http://erp.local/${customer_id}/x"  # type: ignore[attr-defined]
    issues = _issues(tmp_path, GOOD.replace("http://erp.local/orders", "http://erp.local/${customer_id}"))
    assert "for a template field write $${customer_id}" in issues[0]


def test_durations_are_timedeltas_from_the_moment_the_config_loads(tmp_path: Path) -> None:
    from datetime import timedelta

    from bus.config.fields import format_duration

    text = GOOD.replace("    to: [erp]", "    dedup: {ttl: 1h30m}\n    to: [erp]", 1)
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    loaded = load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: SchemaCatalog.load().parsed(), env={})
    dedup = loaded.hub.routes[0].dedup
    assert dedup is not None and dedup.ttl == timedelta(minutes=90)
    assert loaded.outbound[0].delivery.backoff_initial == timedelta(milliseconds=200)  # type: ignore[attr-defined]  # a default, typed too
    assert [format_duration(timedelta(seconds=s)) for s in (0.2, 30, 5400, 86400)] == ["200ms", "30s", "1h30m", "24h"]
    too_long = "no duration this hub can hold"  # an OverflowError out of the loader, not a config error
    for bad, says in (
        ("-5s", "invalid duration"), ("[1, 2]", "cannot read list as a duration"),
        ("1000000000000000000000000000000", too_long), ("99999999999999d", too_long), (".nan", too_long),
    ):  # fmt: skip
        path.write_text(GOOD.replace("    to: [erp]", f"    dedup: {{ttl: {bad}}}\n    to: [erp]", 1))
        with pytest.raises(ConfigError, match=says):
            load_config(path, AdapterRegistry.from_entry_points(), env={})


def test_an_answer_condition_reads_only_the_answer(tmp_path: Path) -> None:
    """`$answer` is the whole answer; any other `$name` (a typo, or the event's `$id`, which is not
    there) would be null and the condition would never hold, unsaid: refused at load, named."""
    good = GOOD.replace(
        "    url: http://erp.local/orders\n",
        '    url: http://erp.local/orders\n    refused_when: find($answer, "success", false) != null\n',
    )
    path = tmp_path / "bus.yaml"
    path.write_text(good)
    catalog = SchemaCatalog.load()
    load_config(path, AdapterRegistry.from_entry_points(), known_schemas=lambda hub: catalog.parsed())
    issues = _issues(tmp_path, good.replace("$answer", "$answr"))
    assert len(issues) == 1 and f"{tmp_path}/bus.yaml:19: outbound[0].refused_when:" in issues[0], issues
    assert "$answr at position 5: an answer's condition reads its fields, or $answer" in issues[0]
