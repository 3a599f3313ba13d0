"""Hostile input gets a documented error, never a crash: fuzzing (hypothesis, bounded in time) over
the bytes every inbound decodes, the webhook's XML parser, the expression language over
sender-controlled values, and the config loader; plus the known bombs, one by one."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.adapter_api import AdapterRegistry
from bus.config.loader import load_config
from bus.documents import parse_json, parse_xml
from bus.errors import ConfigError, ExpressionError
from bus.expr import compile_expression

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=2000) | st.text(alphabet='[]{}":,0123456789.eE-truefalsn ', max_size=2000).map(str.encode))
def test_any_bytes_parse_as_json_or_fail_with_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # the documented error: anything else fails the test
        parse_json(data)


@FAST
@given(st.binary(max_size=2000) | st.text(alphabet="<>/a b=\"'&;!?-[]CDAT", max_size=2000).map(str.encode))
def test_any_bytes_parse_as_xml_or_fail_with_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # the documented error: anything else fails the test
        parse_xml(data)


@pytest.mark.parametrize("depth", [257, 100_000])
def test_json_and_xml_nested_too_deep_are_value_errors_with_the_reason(depth: int) -> None:
    with pytest.raises(ValueError, match="nested more than 256"):
        parse_json(b"[" * depth + b"]" * depth)
    with pytest.raises(ValueError, match="nested more than 256"):
        parse_json(b'{"a":' * depth + b"1" + b"}" * depth)
    with pytest.raises(ValueError, match="nested more than 256"):
        parse_xml(b"<a>" * depth + b"</a>" * depth)
    assert parse_json(b"[" * 200 + b"]" * 200) is not None  # deep, but within the limit


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    """Python's parser takes them; JSON does not have them, and a target's parser would refuse the
    bare word the hub would have written on."""
    with pytest.raises(ValueError, match=f"^{constant} is not JSON"):
        parse_json(f'{{"amount": {constant}}}'.encode())
    assert parse_json(b'{"amount": 1e5, "name": "NaN"}') == {"amount": 100000.0, "name": "NaN"}
    assert parse_json("\ufeff{}".encode("utf-8")) == {}  # a byte order mark before bytes is still skipped


@pytest.mark.parametrize("number", ["1e400", "-1e999", "1" + "0" * 400 + ".5"])
def test_a_number_beyond_a_double_is_refused_not_read_as_infinity(number: str) -> None:
    """Python reads 1e400 as infinity: the event took it, and every target refused it later (JSON
    has no infinity) or stored Infinity (a PostgreSQL double). It is refused where it came in."""
    with pytest.raises(ValueError, match="is beyond what a double holds"):
        parse_json(f'{{"amount": {number}}}'.encode())
    assert parse_json(b'{"amount": 1.7e308, "small": 1e-400}') == {"amount": 1.7e308, "small": 0.0}  # within range; too small is 0


@pytest.mark.parametrize(
    "body",
    [b'{"amount": 1, "currency": "eur", "amount": 1000000}', b'{"data": {"object": {"id": "a", "id": "b"}}}', b'[{"k": 1, "k": 1}]'],
)
def test_a_key_given_twice_in_one_object_is_refused(body: bytes) -> None:
    """Python keeps the last of a repeated key, where a gateway, a signature checker or the
    sender's own log may take the first: the event would carry a value no one else saw."""
    with pytest.raises(ValueError, match=r"^the key '(amount|id|k)' is given twice in one object"):
        parse_json(body)
    assert parse_json(b'{"a": {"id": 1}, "b": {"id": 2}}') == {"a": {"id": 1}, "b": {"id": 2}}  # one key in two objects
    # What a configured system answers (a target, a polled API, a token endpoint) is read as its other clients read it.
    assert parse_json(b'{"k": 1, "k": 2, "n": [{"k": 3, "k": 4}]}', repeated_keys="last") == {"k": 2, "n": [{"k": 4}]}


def test_a_number_too_long_to_read_says_so_in_the_senders_terms() -> None:
    with pytest.raises(
        ValueError, match=r"^a number has more than [0-9,]+ digits$"
    ):  # not Python's advice to call sys.set_int_max_str_digits
        parse_json(b'{"amount": ' + b"9" * 5000 + b"}")


@FAST
@given(st.text(max_size=30).filter(lambda name: '"' not in name))
def test_an_xml_declaration_naming_any_encoding_parses_or_fails_with_a_value_error(encoding: str) -> None:
    """An encoding Python has not ("ISO-885z-1") or that is not a text encoding ("rot13") was a
    LookupError: a webhook's 500 and an ERROR with a traceback per request."""
    with contextlib.suppress(ValueError):
        parse_xml(f'<?xml version="1.0" encoding="{encoding}"?><a>x</a>'.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("encoding", ["ISO-885z-1", "rot13", "base64"])
def test_an_xml_encoding_this_hub_cannot_read_is_said(encoding: str) -> None:
    with pytest.raises(ValueError, match=r"^the XML declares an encoding this hub cannot read"):
        parse_xml(f'<?xml version="1.0" encoding="{encoding}"?><a>x</a>'.encode())


def test_xml_entities_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(ValueError, match="entities"):
        parse_xml(bomb)


@pytest.mark.parametrize(
    ("expression", "document"),
    [
        ("data.a * data.b", {"data": {"a": "x" * 1000, "b": 10**12}}),
        ("data.a % data.b", {"data": {"a": "%999999999d", "b": 1}}),
        ("replace(data.a, '', data.b)", {"data": {"a": "x" * 100_000, "b": "y" * 100_000}}),
        ("join(data.items, data.sep)", {"data": {"items": list(range(100_000)), "sep": "z" * 1000}}),
        ("mask(data.a, 0, data.c)", {"data": {"a": "x" * 100_000, "c": "y" * 100_000}}),
        ("data.a + data.a", {"data": {"a": "x" * 600_000}}),
        # 11 characters of text, made a whole number of a billion digits (minutes of CPU, the process held)
        ("int(decimal(data.a))", {"data": {"a": "1e999999999"}}),
        ("round(decimal(data.a))", {"data": {"a": "1e999999999"}}),
    ],
)
@pytest.mark.timeout(20)
def test_expressions_cannot_be_made_to_build_huge_values(expression: str, document: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ExpressionError) as caught:
        compile_expression(expression)(document)
    assert len(str(caught.value)) < 1200  # the reason never echoes the sender's value whole


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
EXPRESSIONS = [
    "a + b",
    "a * b",
    "a / b",
    "a % b",
    "a - b",
    "a < b",
    "a in b",
    "len(a)",
    "upper(a)",
    "replace(a, b, a)",
    "join(a, b)",
    "substr(a, b)",
    "int(a)",
    "timestamp(a)",
    "minor_units(a, b)",
    "a.b[0].c",
    "coalesce(a, b) + 1",
    "mask(a, b)",
    "round(a, b)",
]


@FAST
@given(st.sampled_from(EXPRESSIONS), JSON_VALUES, JSON_VALUES)
def test_expressions_over_any_values_return_or_raise_expression_error(expression: str, a: object, b: object) -> None:
    with contextlib.suppress(ExpressionError):  # the documented error: anything else fails the test
        compile_expression(expression)({"a": a, "b": b})


@pytest.mark.parametrize("millis", [10**20, -(10**18), 1.7e308, float("nan"), 253_402_300_800_000])
def test_an_epoch_no_calendar_holds_is_an_expression_error(millis: float) -> None:
    """`timestamp()` of a number of milliseconds past the year 9999 raised OSError (EOVERFLOW) or
    OverflowError out of the expression: a traceback where the event's dead letter belonged."""
    with pytest.raises(ExpressionError, match="milliseconds since 1970 is no time between the years 1 and 9999"):
        compile_expression("timestamp(a)")({"a": millis})
    assert str(compile_expression("timestamp(a)")({"a": 253_402_300_799_000})) == "9999-12-31 23:59:59+00:00"


def test_a_kafka_timestamp_no_calendar_holds_is_no_time() -> None:
    """A record's timestamp is its producer's to set: one past the year 9999 stopped a redelivery
    or backfill that met it where retention had cut the window."""
    from bus.moments import epoch_ms_moment

    assert epoch_ms_moment(2**63 - 1) is None and epoch_ms_moment(-(2**63)) is None
    assert str(epoch_ms_moment(1_700_000_000_000)) == "2023-11-14 22:13:20+00:00"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_any_config_text_loads_or_fails_with_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):  # the documented error: anything else fails the test
        load_config(path, AdapterRegistry.from_entry_points(), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
            "expands to more than",
        ),
        ("a: &a [*a]\n", "nested too deeply"),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply|exceeded maximum nesting depth"),  # ours, or libyaml's
    ],
)
def test_yaml_bombs_are_one_line_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, AdapterRegistry.from_entry_points(), env={})
    assert re.search(message, str(caught.value)), caught.value
    assert len(caught.value.issues) == 1


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        # A second `routes:` further down a long file: YAML keeps the last list, and every route of the first was gone unsaid.
        (
            "routes:\n  - {name: a, from: Payment, to: [erp]}\noutbound: []\nroutes: []\n",
            "bus.yaml:4: routes:",
            "'routes' is given twice here (lines 1 and 4)",
        ),
        # A field mapped twice in one route: the first mapping was dropped.
        (
            "routes:\n  - name: a\n    from: Payment\n    to: [erp]\n    when: amount > 1\n    when: amount > 2\n",
            "bus.yaml:6: routes[0].when:",
            "'when' is given twice here (lines 5 and 6)",
        ),
        # PyYAML's unsafe tags are never built (safe loading), and are named rather than taken for plain data.
        ("kafka: !!python/object/apply:os.system [echo hi]\n", "bus.yaml:1: kafka:", "the YAML tag !!python/object/apply:os.system"),
    ],
)
def test_a_key_given_twice_or_an_unsafe_tag_is_a_config_error_naming_its_line(tmp_path: Path, text: str, where: str, message: str) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, AdapterRegistry.from_entry_points(), env={})
    said = [str(issue) for issue in caught.value.issues]
    assert any(where in line and message in line for line in said), said


@pytest.mark.parametrize(
    ("expression", "value", "said"),
    [
        # text that says no number a system meant is refused where it came in, as the JSON parser refuses NaN and 1e999
        ("float(data.a)", "nan", "'nan' is not a finite number"),
        ("float(data.a)", "-Infinity", "'-Infinity' is not a finite number"),
        ("float(data.a)", "1e400", "'1e400' is not a finite number"),
        ("decimal(data.a)", "NaN", "'NaN' is not a finite number"),
        ("minor_units(data.a, 'usd')", "inf", "'inf' is not a finite number"),
        # decimal's own errors said in words, not as "[<class 'decimal.InvalidOperation'>]"
        ("minor_units(data.a, 'usd')", "1e400", "'1e400' in minor units has more than 28 digits"),
        ("major_units(data.a, 'usd')", "1e999999999", "not defined for these decimals (an exponent too large)"),
        ("int(decimal(data.a))", "1e999999999", "has more than 4,300 digits"),
    ],
)
def test_numbers_no_system_meant_are_refused_saying_why(expression: str, value: str, said: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(said)):
        compile_expression(expression)({"data": {"a": value}})
    assert compile_expression(expression)({"data": {"a": "12.5"}}) is not None  # the same expression reads a number
