"""Whether a number fits the column it goes into, before the database changes it unsaid.

A ``numeric(12,2)`` column given 1.005 (a Kuwaiti dinar amount in major units, a unit price, a
computed tax) stores 1.01; an integer column given 2.5 stores 3 on MariaDB and 2 through asyncpg,
which truncates. Neither database says anything (MariaDB notes it as a warning nobody reads, even
in strict mode). The target then holds a number the event never had.

``Places`` is built once per table from the catalog: the mapped columns that keep a fixed number
of decimal places (``numeric(p,s)``/``DECIMAL(p,s)``: ``s``; the integer types: 0). Each row is
checked against it; a value that would be changed is refused with what it would have become
(``numbers: exact``, the default), or rounded half away from zero here, as both databases round
(``numbers: round``), so what is written is the same on both and what ``bus migrate`` reads back
is what it expects.

A float carries about 16 significant digits: 59.97000000000001 (``19.99 * 3``) is 59.97 to every
purpose, so a float whose rounding moves it by no more than float noise fits; 10.005 does not.
"""

from __future__ import annotations

__all__ = ["Places", "places_of"]

import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bus.adapter_api import PermanentError

_INTEGERS = frozenset({"smallint", "integer", "bigint", "int", "tinyint", "mediumint"})
_FIXED = frozenset({"numeric", "decimal"})
_FLOAT_NOISE = 1e-12  # relative: how far a float may be from its rounding and still be taken as that number


def places_of(kind: str, digits: int | None) -> int | None:
    """The decimal places a column of this type keeps; None when it keeps what it is given (text,
    floats, an unconstrained ``numeric``)."""
    if kind in _INTEGERS:
        return 0
    if kind in _FIXED:
        return digits
    return None


class Places:
    """The mapped columns that keep a fixed number of decimal places, and how a row is made to fit."""

    def __init__(self, places: dict[str, int], kinds: dict[str, str], *, round_them: bool, where: str) -> None:
        self._places = places
        self._kinds = kinds
        self._round = round_them
        self._where = where
        self._steps = {column: Decimal(1).scaleb(-n) for column, n in places.items()}

    def __bool__(self) -> bool:
        return bool(self._places)

    def fit(self, row: dict[str, Any]) -> None:
        """Make ``row``'s numbers fit their columns in place, or refuse the row (PermanentError)."""
        for column, step in self._steps.items():
            value = row.get(column)
            if value is None or isinstance(value, (bool, int)):
                continue
            fitted = self._fitted(column, value, step)
            if fitted is not value:
                row[column] = fitted

    def _fitted(self, column: str, value: Any, step: Decimal) -> Any:
        places = self._places[column]
        if type(value) is Decimal and value.is_finite() and int(value.as_tuple().exponent) >= -places:
            return value  # no more places than the column keeps: the common case, without rounding anything
        if type(value) is float and math.isfinite(value) and round(value, places) == value:
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise PermanentError(f"{self._where}: {column} is {value!r}, which a column of {self._type(column)} cannot hold")
            exact = Decimal(repr(value))  # the shortest text that reads back as this float: what was meant
        elif isinstance(value, Decimal):
            if not value.is_finite():
                raise PermanentError(f"{self._where}: {column} is {value}, which a column of {self._type(column)} cannot hold")
            exact = value
        elif isinstance(value, str):
            try:
                exact = Decimal(value.strip())
            except InvalidOperation:
                return value  # not a number: the database says why it cannot take it
            if not exact.is_finite():
                return value
        else:
            return value
        try:
            rounded = exact.quantize(step, rounding=ROUND_HALF_UP)
        except InvalidOperation:  # more digits than a Decimal holds: far beyond the column, which refuses it
            return value
        if rounded == exact:
            return value
        if isinstance(value, float) and abs(rounded - exact) <= abs(exact) * Decimal(_FLOAT_NOISE):
            return int(rounded) if not self._places[column] else rounded
        if self._round:
            return int(rounded) if not self._places[column] else rounded
        places = self._places[column]
        raise PermanentError(
            f"{self._where}: {column} is {value!r}, and the column is {self._type(column)}: it would be stored as "
            f"{rounded if places else int(rounded)}, with nothing said. Round it in the mapping (round(x, {places})), widen "
            "the column, or say numbers: round"
        )

    def _type(self, column: str) -> str:
        kind, places = self._kinds[column], self._places[column]
        return f"{kind} (whole numbers)" if kind not in _FIXED else f"{kind} with {places} decimal place{'s' if places != 1 else ''}"
