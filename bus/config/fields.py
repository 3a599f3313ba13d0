"""Field types of config models that hold expressions, templates, bodies and durations.

Each is checked when the config loads (a syntax error names file, line and field), and each
carries a ``Kind`` marker so the config checker (``bus.config.check``) can find every
expression in any model, an installed adapter's included, and check its field references
against the schema in scope. An adapter whose config declares its expressions with these types
gets the checks for free; one that declares them as plain ``str`` gets only its own validation.
"""

from __future__ import annotations

__all__ = ["BodyMap", "Duration", "Expression", "Kind", "SecretTemplate", "TemplateText", "kinds_of"]

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, SecretStr

from bus.expr import compile_expression, compile_template
from bus.expr.functions import parse_duration
from bus.mapping import Body


@dataclass(frozen=True, slots=True)
class Kind:
    """What a config field holds: an expression, a ``${}`` template, or a body block, each read
    against the event (outbound) or the received document (inbound)."""

    kind: Literal["expression", "template", "body"]


def _check_expression(text: str) -> str:
    compile_expression(text)  # raises with the position of the error
    return text


def _check_template(text: str) -> str:
    compile_template(text)
    return text


def _check_secret_template(value: SecretStr) -> SecretStr:
    compile_template(value.get_secret_value())
    return value


def _check_duration(text: str) -> str:
    parse_duration(text)  # raises ValueError with examples
    return text


Expression = Annotated[str, AfterValidator(_check_expression), Kind("expression")]  # an expression over a document
TemplateText = Annotated[str, AfterValidator(_check_template), Kind("template")]  # text with ${expression} parts
SecretTemplate = Annotated[SecretStr, AfterValidator(_check_secret_template), Kind("template")]  # a secret that may hold ${}
BodyMap = Annotated[dict[str, Any] | None, AfterValidator(Body.check), Kind("body")]  # field -> expression or nested block
Duration = Annotated[str, AfterValidator(_check_duration)]  # "500ms", "30s", "5m", "1h30m"


def kinds_of(metadata: list[Any]) -> Kind | None:
    return next((m for m in metadata if isinstance(m, Kind)), None)
