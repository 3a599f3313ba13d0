"""adapters/sql/numbers.py: which numbers fit a column that keeps a fixed number of decimal places."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from adapters.sql.numbers import Places, places_of
from bus.adapter_api import PermanentError


def places(round_them: bool = False) -> Places:
    return Places({"price": 2, "qty": 0}, {"price": "numeric", "qty": "integer"}, round_them=round_them, where="db/t")


@pytest.mark.parametrize(
    ("price", "qty", "fitted"),
    [
        (Decimal("19.99"), 3, (Decimal("19.99"), 3)),
        (19.9, 3.0, (19.9, 3.0)),  # as given: the database stores them as they are
        (0.1 * 3, 1, (Decimal("0.30"), 1)),  # float noise: the number meant
        ("12.50", "7", ("12.50", "7")),
        (None, None, (None, None)),
        (True, 1, (True, 1)),
        ("n/a", 1, ("n/a", 1)),  # not a number: the database says why it cannot take it
        (Decimal("1e40"), 1, (Decimal("1e40"), 1)),  # beyond the column: the database refuses it
    ],
)
def test_what_fits_is_left_as_it_is(price: Any, qty: Any, fitted: tuple[Any, Any]) -> None:
    row = {"price": price, "qty": qty, "name": "x"}
    places().fit(row)
    assert (row["price"], row["qty"]) == fitted and row["name"] == "x"


@pytest.mark.parametrize(
    ("price", "qty", "said"),
    [
        (Decimal("1.005"), 1, "price is Decimal('1.005'), and the column is numeric with 2 decimal places: it would be stored as 1.01"),
        (10.005, 1, "price is 10.005"),
        ("3.999", 1, "it would be stored as 4.00"),
        (1, 2.5, "qty is 2.5, and the column is integer (whole numbers): it would be stored as 3"),
        (1, Decimal("-2.5"), "it would be stored as -3"),  # half away from zero, as the databases round
        (float("nan"), 1, "price is nan, which a column of numeric with 2 decimal places cannot hold"),
        (Decimal("Infinity"), 1, "cannot hold"),
    ],
)
def test_what_would_change_is_refused_saying_what_it_would_become(price: Any, qty: Any, said: str) -> None:
    with pytest.raises(PermanentError, match="db/t") as refused:
        places().fit({"price": price, "qty": qty})
    assert said in str(refused.value)


def test_round_rounds_half_away_from_zero() -> None:
    row = {"price": Decimal("1.005"), "qty": -2.5}
    places(round_them=True).fit(row)
    assert row == {"price": Decimal("1.01"), "qty": -3} and isinstance(row["qty"], int)


def test_the_columns_that_keep_places() -> None:
    assert [places_of(k, d) for k, d in [("integer", None), ("bigint", 0), ("numeric", 3), ("decimal", 2)]] == [0, 0, 3, 2]
    assert [places_of(k, d) for k, d in [("numeric", None), ("double precision", None), ("text", None), ("float", 2)]] == [None] * 4
