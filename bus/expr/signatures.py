"""The types of the function library (``bus.expr.functions``) for the checker: each function's
number of arguments, what each parameter takes, and the type of its result given its arguments.
"""

from __future__ import annotations

__all__ = ["SIGNATURES", "Signature"]

from collections.abc import Callable
from dataclasses import dataclass

from bus.expr.types import ANY, BOOL, DECIMAL, DURATION, FLOAT, INT, NULL, STRING, TIMESTAMP, Array, Type, is_nullable, join, non_null


# A parameter is "any" or kinds joined by "|" ("string", "number", "list", "map", "time",
# "duration", "bool", "record"); a trailing "!" means null fails there.
@dataclass(frozen=True)
class Signature:
    arity: tuple[int, int]  # -1: any number
    params: tuple[str, ...]
    result: Callable[[list[Type]], Type]


def _same_nullability(result: Type) -> Callable[[list[Type]], Type]:
    return lambda args: join(result, NULL) if args and is_nullable(args[0]) else result


def _fixed(result: Type) -> Callable[[list[Type]], Type]:
    return lambda args: result


def _coalesce(args: list[Type]) -> Type:
    found: list[Type] = []
    for arg in args:
        found.append(non_null(arg))
        if not is_nullable(arg):
            return join(*found)
    return join(*found, NULL)


def _switch(args: list[Type]) -> Type:
    cases = args[1:]
    results = [cases[i] for i in range(1, len(cases), 2)]
    default = [cases[-1]] if len(cases) % 2 else [NULL]
    return join(*results, *default)


def _first_item(args: list[Type]) -> Type:
    items = non_null(args[0]) if args else ANY
    return join(items.item, NULL) if isinstance(items, Array) else ANY


def _extreme(args: list[Type]) -> Type:
    return join(*(non_null(a) for a in args), *((NULL,) if all(is_nullable(a) for a in args) else ()))


def _rounded(args: list[Type]) -> Type:
    base = INT if len(args) == 1 else non_null(args[0])
    return join(base, NULL) if is_nullable(args[0]) else base


_TEXT = "string|number|bool|time|clock|duration|bytes"
SIGNATURES: dict[str, Signature] = {
    "lower": Signature((1, 1), ("string",), _same_nullability(STRING)),
    "upper": Signature((1, 1), ("string",), _same_nullability(STRING)),
    "trim": Signature((1, 1), ("string",), _same_nullability(STRING)),
    "startswith": Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "endswith": Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "contains": Signature((2, 2), ("string|list|map", "any"), _fixed(BOOL)),
    "matches": Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "replace": Signature((3, 3), ("string", "string!", "string!"), _same_nullability(STRING)),
    "split": Signature((2, 2), ("string", "string!"), _same_nullability(Array(STRING))),
    "join": Signature((2, 2), ("list", "any"), _same_nullability(STRING)),
    "substr": Signature((2, 3), ("string", "number!", "number"), _same_nullability(STRING)),
    "len": Signature((1, 1), ("string|list|map|bytes",), _same_nullability(INT)),
    "exists": Signature((1, 1), ("any",), _fixed(BOOL)),
    "coalesce": Signature((1, -1), ("any",), _coalesce),
    "switch": Signature((1, -1), ("any",), _switch),
    "find": Signature((3, 3), ("list", "string!", "any"), _first_item),
    "mask": Signature((1, 3), ("any", "number!", "string!"), _same_nullability(STRING)),
    "hmac_sha256": Signature((2, 2), ("any", "string!"), _same_nullability(STRING)),
    "str": Signature((1, 1), ("any",), _same_nullability(STRING)),
    "int": Signature((1, 1), ("string|number|bool",), _same_nullability(INT)),
    "float": Signature((1, 1), ("string|number|bool",), _same_nullability(FLOAT)),
    "bool": Signature((1, 1), ("any",), _same_nullability(BOOL)),
    "abs": Signature((1, 1), ("number|duration",), lambda args: args[0]),
    "round": Signature((1, 2), ("number", "number!"), _rounded),
    "min": Signature((1, -1), ("number|string|time|duration",), _extreme),
    "max": Signature((1, -1), ("number|string|time|duration",), _extreme),
    "now": Signature((0, 0), (), _fixed(TIMESTAMP)),
    "timestamp": Signature((1, 2), ("string|number|time", "string!"), _same_nullability(TIMESTAMP)),
    "duration": Signature((1, 1), ("string|number|duration",), _same_nullability(DURATION)),
    "millis": Signature((1, 1), ("string|number|time|duration",), _same_nullability(INT)),
    "iso": Signature((1, 1), ("string|number|time",), _same_nullability(STRING)),
    "date": Signature((1, 1), ("string|number|time",), _same_nullability(STRING)),
    "format_time": Signature((2, 3), ("string|number|time", "string!", "string!"), _same_nullability(STRING)),
    "decimal": Signature((1, 1), ("string|number",), _same_nullability(DECIMAL)),
    "minor_units": Signature((2, 2), ("string|number", "string!"), _same_nullability(INT)),
    "major_units": Signature((2, 2), ("string|number", "string!"), _same_nullability(DECIMAL)),
}
