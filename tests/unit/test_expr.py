from __future__ import annotations

import pytest

from bus.errors import ExpressionError
from bus.expr import compile_expression

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
