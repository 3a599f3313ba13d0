"""String templates: ``"Order ${order_id} for ${upper(customer.name)}"``, compiled once.

Each ``${...}`` holds an expression; ``null`` renders as an empty string, other values as the hub
writes them in text (``bus.jsontext.text_cell``). ``$${`` is a literal ``${``.
"""

from __future__ import annotations

__all__ = ["compile_template", "one_level"]

from collections.abc import Callable, Mapping
from typing import Any

from bus.errors import ExpressionError, PermanentError
from bus.expr.compiler import Compiled, compile_expression
from bus.jsontext import text_cell


class Template:
    def __init__(self, text: str, parts: list[str | Compiled], escape: Callable[[str], str] | None = None) -> None:
        self.text = text
        self._parts = parts
        self._escape = escape
        self.constant = all(isinstance(p, str) for p in parts)  # no ${...}: the same text for every event

    @property
    def expressions(self) -> list[Compiled]:
        """The ``${...}`` parts, for the config checker."""
        return [p for p in self._parts if isinstance(p, Compiled)]

    def __call__(self, doc: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str:
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(doc, meta)
                # Other values as the hub writes them for others (bus.jsontext): a time in RFC 3339, a
                # flag true/false, a record as JSON; str() wrote Python's forms into URLs and topics.
                text = value if isinstance(value, str) else text_cell(value, "destination")
                out.append(self._escape(text) if self._escape else text)
        return "".join(out)


def compile_template(text: str, *, escape: Callable[[str], str] | None = None) -> Template:
    """``escape`` is applied to every substituted value, never to the literal text (a URL template
    passes ``urllib.parse.quote`` so a value cannot add path segments or a query)."""
    parts: list[str | Compiled] = []
    pos = 0
    literal = ""
    while pos < len(text):
        if text.startswith("$${", pos):
            literal += "${"
            pos += 3
        elif text.startswith("${", pos):
            end = text.find("}", pos + 2)
            # An expression may hold "}" inside a string literal; take the first "}" that closes a parsable expression.
            while end != -1:
                try:
                    expr = compile_expression(text[pos + 2 : end])
                    break
                except ExpressionError:
                    end = text.find("}", end + 1)
            if end == -1:
                raise ExpressionError("unclosed or invalid ${...} in template", expression=text, position=pos)
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(expr)
            pos = end + 1
        else:
            literal += text[pos]
            pos += 1
    if literal:
        parts.append(literal)
    return Template(text, parts, escape)


def one_level(what: str, forbidden: str, *, empty: bool = True) -> Callable[[str], str]:
    """An ``escape`` for a destination split into levels (an MQTT topic by ``/``, a NATS subject by
    ``.``), which has no way to quote a separator: a substituted value is one level, or the event
    is refused (PermanentError: a dead letter saying why). A value holding a separator would
    publish one level deeper, where another key's events go (another tenant's topic), and one
    holding a wildcard or a control character is refused by the broker, on every try."""

    def check(value: str) -> str:
        if not value and not empty:
            raise PermanentError(f"{what}: a value is empty (a missing field?), and a level cannot be")
        bad = next((c for c in value if c in forbidden or c < " " or c == "\x7f"), None)
        if bad is not None:
            shown = value if len(value) <= 80 else value[:80] + "..."
            raise PermanentError(
                f"{what}: the value {shown!r} holds {bad!r}, which one level cannot hold "
                f"(a separator, a wildcard or a control character of {what})"
            )
        return value

    return check
