"""Field types of config models that hold expressions, templates, bodies and durations.

Each is checked when the config loads (a syntax error names file, line and field), and each
carries a ``Kind`` marker so the config checker (``bus.config.check``) can find every
expression in any model, an installed adapter's included, and check its field references
against the schema in scope. An adapter whose config declares its expressions with these types
gets the checks for free; one that declares them as plain ``str`` gets only its own validation.
"""

from __future__ import annotations

__all__ = [
    "AnswerExpression",
    "BodyMap",
    "ConfigJsonSchema",
    "ConfigPath",
    "Duration",
    "Expression",
    "Kind",
    "SecretTemplate",
    "TemplateText",
    "TextEncoding",
    "duration",
    "expression_fields",
    "format_duration",
    "kinds_of",
]

import types as pytypes
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, PlainSerializer, SecretStr, ValidationInfo, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema

from bus.documents import known_text_encoding
from bus.expr import compile_expression, compile_template, tree
from bus.expr.body import Body
from bus.expr.functions import parse_duration


@dataclass(frozen=True, slots=True)
class Kind:
    """What a config field holds: an expression, a ``${}`` template, or a body block, each read
    against the event (outbound) or the received document (inbound)."""

    kind: Literal["expression", "template", "body"]


def _check_expression(text: str) -> str:
    compile_expression(text)  # raises with the position of the error
    return text


def _check_answer_expression(text: str) -> str:
    """Its syntax, and that the only ``$name`` it reads is ``$answer`` (the event's metadata is not
    there: a ``$answr`` typo would be null, and the condition would never hold, unsaid)."""
    compiled = compile_expression(text)
    pending = [compiled.tree]
    while pending:
        node = pending.pop()
        if isinstance(node, tree.Meta) and node.name != "answer":
            raise ValueError(f"${node.name} at position {node.pos}: an answer's condition reads its fields, or $answer (the whole answer)")
        pending += tree.children(node)
    return text


def _check_template(text: str) -> str:
    compile_template(text)
    return text


def _check_secret_template(value: SecretStr) -> SecretStr:
    compile_template(value.get_secret_value())
    return value


def _to_duration(value: Any) -> timedelta:
    try:
        parsed = parse_duration(value)  # raises ValueError with examples
    except TypeError as exc:
        raise ValueError(f"{exc} (examples: 500ms, 90s, 5m, 1h30m, 2d)") from exc
    if parsed is None:
        raise ValueError("a duration is required (examples: 500ms, 90s, 5m, 1h30m, 2d)")
    if parsed < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return parsed


def duration(text: str) -> timedelta:
    """A duration written as text, for a model's default: ``Field(default=duration("30s"))``."""
    return _to_duration(text)


def format_duration(delta: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``"1h30m"``: how durations are written back (docs, JSON)."""
    millis = round(delta.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    rest, parts = millis // 1000, []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def _beside_the_config(value: Path, info: ValidationInfo) -> Path:
    """A relative path is relative to the config file that names it (the loader passes its folder
    as ``config_dir``), wherever the hub is started from."""
    base = (info.context or {}).get("config_dir")
    return value if value.is_absolute() or base is None else Path(base) / value


# A file the config names (a WSDL, a schema): relative to the config file, absolute once loaded.
ConfigPath = Annotated[Path, AfterValidator(_beside_the_config)]
Expression = Annotated[str, AfterValidator(_check_expression), Kind("expression")]  # an expression over a document
# An expression over what a target answered, not over the event: its syntax is checked when the
# config loads, its fields are the target's and cannot be checked against a schema.
AnswerExpression = Annotated[str, AfterValidator(_check_answer_expression)]
TemplateText = Annotated[str, AfterValidator(_check_template), Kind("template")]  # text with ${expression} parts
SecretTemplate = Annotated[SecretStr, AfterValidator(_check_secret_template), Kind("template")]  # a secret that may hold ${}
BodyMap = Annotated[dict[str, Any] | None, AfterValidator(Body.check), Kind("body")]  # field -> expression or nested block
# A file's text encoding: one Python has a text codec for, refused at load otherwise ("latin1x",
# "base64"): it was a LookupError when the first file came.
TextEncoding = Annotated[str, AfterValidator(known_text_encoding)]
# "500ms", "30s", "5m", "1h30m" in YAML; a timedelta from the moment the config is loaded.
Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"}),
]


class ConfigJsonSchema(GenerateJsonSchema):
    """JSON Schema of config models, with defaults written as a config writes them (a duration
    as ``"30s"``, not pydantic's ISO 8601 ``"PT30S"``)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def kinds_of(metadata: list[Any]) -> Kind | None:
    return next((m for m in metadata if isinstance(m, Kind)), None)


Loc = tuple[str | int, ...]


def expression_fields(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, str, Any]]:
    """Every expression, template and body block in ``model`` (nested models, lists and maps
    included): (where, kind, text or block). Secret templates are given in clear."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        yield from _walk(info.annotation, list(info.metadata), value, (*loc, info.alias or name))


def _walk(annotation: Any, metadata: list[Any], value: Any, loc: Loc) -> Iterator[tuple[Loc, str, Any]]:
    if value is None:
        return
    kind = kinds_of(metadata)
    if kind is not None:
        yield loc, kind.kind, value.get_secret_value() if isinstance(value, SecretStr) else value
        return
    if isinstance(value, BaseModel):
        yield from expression_fields(value, loc)
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _walk(args[0], list(annotation.__metadata__), value, loc)
    elif origin in (typing.Union, pytypes.UnionType):
        for option in args:
            found = list(_walk(option, [], value, loc))
            if found:
                yield from found
                return
    elif origin is dict and isinstance(value, Mapping) and len(args) == 2:
        for key, item in value.items():
            yield from _walk(args[1], [], item, (*loc, key))
    elif origin is list and isinstance(value, list) and args:
        for i, item in enumerate(value):
            yield from _walk(args[0], [], item, (*loc, i))
