from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bus.errors import ExpressionError, PermanentError
from bus.expr import compile_expression, compile_template

DOC = {
    "amount": 150_000,
    "currency": "usd",
    "status": None,
    "data": {"object": {"id": "pi_1", "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]}},
    "tags": ["vip", "eu"],
}
META = {"id": "evt-1", "type": "bus.canonical.Payment", "key": "pi_1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('amount >= 100000 and currency == "usd"', True),
        ('amount >= 100000 and currency == "eur"', False),
        ("amount < 100 or currency == 'usd'", True),
        ("not amount < 100", True),
        ("not (amount > 100 and currency == 'usd')", False),
        ("data.object.id", "pi_1"),
        ("data.object.lines[1].sku", "B-2"),
        ("data.object.lines[-1].qty", 1),
        ("data.object.lines[5].sku", None),
        ("data.missing.deeper", None),
        ('"vip" in tags', True),
        ('"us" not in tags', True),
        ('currency in ["usd", "eur"]', True),
        ("amount * 2 + 1", 300_001),
        ("amount / 100", 1500.0),
        ("amount % 7", 150_000 % 7),
        ("-amount", -150_000),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ('upper(currency) + "-" + lower("X")', "USD-x"),
        ('startswith(data.object.id, "pi_")', True),
        ('endswith(data.object.id, "_1")', True),
        ('contains(data.object.id, "_")', True),
        ('matches(data.object.id, "^pi_[0-9]+$")', True),
        ("len(tags)", 2),
        ("exists(status)", False),
        ("status == null", True),
        ("missing >= 3", False),  # ordering against null never matches, never raises
        ("coalesce(status, 'unknown')", "unknown"),
        ("$id", "evt-1"),
        ("$key == data.object.id", True),
        ("true and not false", True),
        ("1.5 * 2", 3.0),
        ("'it\\'s'", "it's"),
    ],
)
def test_evaluates(text: str, expected: object) -> None:
    assert compile_expression(text)(DOC, META) == expected


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("amount >=", "unexpected end of expression", 10),
        ("a and (b", "expected ')'", 9),
        ("nosuchfn(1)", "unknown function 'nosuchfn'", 1),
        ("1 ! 2", "unexpected character '!'", 3),
        ("a b", "unexpected 'b'", 3),
        ("a.", "expected a field name", 3),
        ("", "empty expression", 1),
        ("[1, 2", "expected ']'", 6),
        ('timestamp(t, "Europe/Berln")', "unknown time zone 'Europe/Berln'", 14),
        ('format_time(t, "%H", "CEST")', "unknown time zone 'CEST' (an IANA name", 22),
    ],
)
def test_rejects_with_position(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert message in str(info.value)
    assert info.value.position is not None and info.value.position + 1 == position


def test_evaluation_error_names_expression() -> None:
    expr = compile_expression("currency + 1")
    with pytest.raises(ExpressionError, match="cannot evaluate 'currency \\+ 1'"):
        expr(DOC)


def test_and_or_short_circuit() -> None:
    # The right side would fail; short-circuiting means it is never evaluated.
    assert compile_expression("false and (currency + 1)")(DOC) is False
    assert compile_expression("true or (currency + 1)")(DOC) is True


def test_non_mapping_document_reads_as_null() -> None:
    assert compile_expression("a.b")({"a": 5}) is None


# -- functions: time, money, strings, templates ------------------------------------------------

TIMED = {
    "created": "2026-03-01T10:00:00Z",
    "ms": 1_772_359_200_000,
    "price": "12.345",
    "name": "  Ada  ",
    "cur": "jpy",
    "links": [{"r": "self", "u": 1}, {"r": "next", "u": 2}],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp(created)", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("timestamp(ms) == timestamp(created)", True),
        ('timestamp(created) + duration("1h30m")', datetime(2026, 3, 1, 11, 30, tzinfo=UTC)),
        ('timestamp(created) - timestamp("2026-03-01T09:00:00Z") == duration("1h")', True),
        ('timestamp(created) > timestamp("2026-02-28T00:00:00+01:00")', True),
        ('duration("500ms") < duration("1s")', True),
        ('duration("2d") == duration("48h")', True),
        ("millis(timestamp(created))", 1_772_359_200_000),
        ('millis(duration("1m"))', 60_000),
        ("iso(ms)", "2026-03-01T10:00:00.000Z"),
        ("date(created)", "2026-03-01"),
        ('format_time(created, "%d/%m/%Y")', "01/03/2026"),
        # A legacy system's local time names its zone: wall-clock time there, winter and summer.
        ('iso(timestamp("2026-03-01 10:00:00", "Europe/Berlin"))', "2026-03-01T09:00:00.000Z"),
        ('iso(timestamp("2026-07-01T10:00:00", "Europe/Berlin"))', "2026-07-01T08:00:00.000Z"),
        ('iso(timestamp(created, "Europe/Berlin"))', "2026-03-01T10:00:00.000Z"),  # a time with its own zone keeps it
        ('format_time(created, "%H:%M %Z", "America/New_York")', "05:00 EST"),
        ("timestamp(missing)", None),
        ('minor_units("12.34", "usd")', 1234),
        ('minor_units(price, "usd")', 1234),  # 1234.5 rounds half to even
        ('minor_units("1.235", "usd")', 124),
        ("minor_units(1200, cur)", 1200),  # yen has no minor unit
        ('minor_units("1.5", "kwd")', 1500),  # dinar has three
        ('major_units(1234, "eur")', Decimal("12.34")),
        ("decimal(price) * 2", Decimal("24.690")),
        ("trim(name)", "Ada"),
        ('replace("a-b-c", "-", "+")', "a+b+c"),
        ('split("a,b", ",")', ["a", "b"]),
        ('join(["a", 1], "/")', "a/1"),
        ('substr("abcdef", 1, 3)', "bc"),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("abs(-3)", 3),
        ("min(3, null, 1)", 1),
        ("max(null, null)", None),
        ('switch("CL", "OP", "open", "CL", "closed")', "closed"),
        ('switch("XX", "OP", "open", "CL", "closed")', None),
        ('switch("XX", "OP", "open", "unknown")', "unknown"),
        ('switch(missing, null, "none", "some")', "none"),
        ('find(links, "r", "next").u', 2),
        ('find(links, "r", "prev")', None),
        ('find(name, "r", "next")', None),
        ('find(missing, "r", "next")', None),
        ('mask("4111111111111111")', "************1111"),
        ('mask("Ada Lovelace", 0, "#")', "############"),
        ('mask("ab", 4)', "ab"),
        ("mask(missing)", None),
        ('hmac_sha256("MRN-001", "k")', "13ecaff5e5f98863a6c976ca1e13bb8301b085af0173b5b5230d877865ef2af6"),
        ('hmac_sha256("MRN-001", "k") == hmac_sha256("MRN-001", "other")', False),
    ],
)
def test_functions(text: str, expected: object) -> None:
    assert compile_expression(text)(TIMED) == expected


def test_now_is_aware_utc() -> None:
    got = compile_expression("now()")({})
    assert got.tzinfo is not None and abs(got - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('duration("soon")', "invalid duration 'soon'"),
        ("duration(100000000000000)", "no duration this hub can hold"),  # an OverflowError out of the mapping
        ('minor_units("x", "usd")', "'x' is not a number"),
        ('minor_units("1", "dollars")', "'dollars' is not an ISO 4217 currency code"),
        ('timestamp("yesterday")', "Invalid isoformat string"),
    ],
)
def test_function_errors_are_expression_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        compile_expression(text)(TIMED)


def test_str_writes_values_as_the_hub_writes_them_for_other_systems() -> None:
    """str() gave Python's forms ("True", "2026-01-01 09:30:00+00:00", "{'k': [1]}"), which went
    into text fields of targets as such; now the same text as templates and CSV cells."""
    at = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    data = {"on": True, "at": at, "filter": {"k": [1]}, "id": 42, "name": "Ada", "gone": None, "price": Decimal("9.90")}
    shown = {name: compile_expression(f"str({name})")(data) for name in data}
    assert shown == {
        "on": "true",
        "at": "2026-01-01T09:30:00.000Z",
        "filter": '{"k":[1]}',
        "id": "42",
        "name": "Ada",
        "gone": None,
        "price": "9.90",
    }
    with pytest.raises(ExpressionError, match="not a number"):
        compile_expression("str(ratio)")({"ratio": float("nan")})
    for amount in (Decimal("NaN"), Decimal("-Infinity")):  # a PostgreSQL numeric read by sql_poll: no amount, as a float's NaN
        with pytest.raises(ExpressionError, match="not a number"):
            compile_expression("str(amount)")({"amount": amount})


def test_bool_reads_text_as_its_senders_mean_it() -> None:
    """Python's bool("false") is True: ``bool(active)`` over a CSV column, a form field or an XML
    element made every "false", "0" and "no" true, with nothing said. Text is read as a yes or a
    no; text that is neither is an error naming it (a refused row), never a guess."""
    flag = compile_expression("bool(active)")
    said = {text: flag({"active": text}) for text in ["true", "True", " YES ", "y", "on", "1", "t"]}
    said |= {text: flag({"active": text}) for text in ["false", "FALSE", "no", "N", "off", "0", "f", ""]}
    assert said == {text: text.strip().lower() in {"true", "yes", "y", "on", "1", "t"} for text in said}
    assert [flag({"active": v}) for v in (0, 1, 2, 0.0, None, [], True, False)] == [False, True, True, False, None, False, True, False]
    with pytest.raises(ExpressionError, match="'maybe' is not a yes or a no"):
        flag({"active": "maybe"})
    assert compile_expression('bool(active) and not bool("0")')({"active": "yes"}) is True


def test_templates() -> None:
    template = compile_template('Order ${order_id} for ${upper(customer.name)}: ${missing}$${literal} ${"}"}')
    assert template({"order_id": 7, "customer": {"name": "ada"}}) == "Order 7 for ADA: ${literal} }"
    assert compile_template("no placeholders")({}) == "no placeholders"
    # Other values as the hub writes them for other systems, not Python's str(): "True", "2026-01-01 00:00:00+00:00", "{'k': 1}".
    at = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    url = compile_template("/flags/${on}/${off}/${at}/${filter}/${ratio}")
    assert (
        url({"on": True, "off": False, "at": at, "filter": {"k": [1]}, "ratio": 0.5})
        == '/flags/true/false/2026-01-01T09:30:00.000Z/{"k":[1]}/0.5'
    )
    with pytest.raises(PermanentError, match="not a number"):
        url({"on": True, "off": False, "at": at, "filter": None, "ratio": float("inf")})
    with pytest.raises(ExpressionError, match="unclosed or invalid"):
        compile_template("Hello ${name")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("`Order ID`", "A-17"),  # a CSV header with a space
        ("`Währung`", "EUR"),  # a German bank export's header
        ("`first-name` + ' ' + `@odata.etag`", 'Zoë W/"3"'),
        ("customer.`Customer Name`", "Ørsted A/S"),
        ("`lines`[0].`unit price` * 2", 25.0),
        ("`a\\`b`", 1),  # a backtick inside: escaped
        ("`Order ID` == `Order ID`", True),
        ("`no such`", None),  # a missing field is null, as any other
    ],
)
def test_a_field_whose_name_is_no_identifier_is_read_between_backticks(text: str, expected: object) -> None:
    """Legacy exports name their columns as people do (`Order ID`, `Währung`, `Amount (EUR)`),
    JSON keys may hold dashes or dots; none of those could be read at the top of a document."""
    doc = {
        "Order ID": "A-17",
        "Währung": "EUR",
        "first-name": "Zoë",
        "@odata.etag": 'W/"3"',
        "customer": {"Customer Name": "Ørsted A/S"},
        "lines": [{"unit price": 12.5}],
        "a`b": 1,
    }
    assert compile_expression(text)(doc, {}) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("`Order ID", "a quoted field name (`...`) is not closed"), ('"open', "a quoted string is not closed")]
)
def test_an_unclosed_quote_says_so(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert message in str(info.value) and info.value.position == 0
