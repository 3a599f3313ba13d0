"""Config models of the routing layer: routes, their transforms and patterns, lookup tables.

Every expression and template is compiled here, at validation, so a mistake is a config error
with file, line, field and position, never a surprise at run time.
"""

from __future__ import annotations

__all__ = [
    "AggregateConfig",
    "DedupConfig",
    "EnrichConfig",
    "RouteConfig",
    "RouterConfig",
    "SplitConfig",
    "TableConfig",
    "ThrottleConfig",
    "TransformConfig",
]

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bus.config.base import ConfigModel
from bus.config.fields import Duration, Expression, TemplateText, duration
from bus.expr import compile_expression


class TransformConfig(ConfigModel):
    """Reshape the event for its subscribers; optionally into another canonical schema.

    Without ``map`` the event's fields are copied, then ``rename`` and ``drop`` apply; with
    ``map`` only the mapped fields are kept. ``templates`` and ``defaults`` apply last.
    Expressions read the incoming event (and, in a split route, the element under its ``as`` name).
    """

    schema_: str | None = Field(default=None, alias="schema", description="Output schema; default the route's `from`.")
    map: dict[str, Expression] | None = Field(
        default=None,
        description="Output field -> expression (copy, rename, constant, computed).",
        examples=[{"invoice_id": '"INV-" + order_id', "amount": "total", "due": 'iso(now() + duration("30d"))'}],
    )
    rename: dict[str, str] = Field(default_factory=dict, description="Old field -> new field, when copying.")
    drop: list[str] = Field(
        default_factory=list,
        description="Fields removed, when copying: absent from what subscribers receive (a body without `body:` leaves them "
        "out; the Avro event still carries them, as their default, since its schema has them).",
    )
    templates: dict[str, TemplateText] = Field(
        default_factory=dict,
        description="Output field -> string template with ${expression} parts.",
        examples=[{"title": "Order ${order_id}"}],
    )
    defaults: dict[str, Any] = Field(default_factory=dict, description="Output field -> value used when the field is missing or null.")
    key: Expression | None = Field(default=None, description="Expression for the output's Kafka key; default the incoming key.")

    @model_validator(mode="after")
    def _copy_only_options(self) -> TransformConfig:
        if self.map is not None and (self.rename or self.drop):
            raise ValueError("rename and drop apply when copying fields; with map, list the output fields in map")
        return self


class SplitConfig(ConfigModel):
    """Splitter: one event in, one event out per element of a list (e.g. order lines)."""

    items: Expression = Field(description="Expression giving the list to split.", examples=["lines"])
    as_: str = Field(default="item", alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the element in expressions.")


class DedupConfig(ConfigModel):
    """Idempotent receiver: drop an event whose id was already seen within ``ttl``."""

    by: Expression = Field(default="$id", description="Expression giving the identity of an event.")
    ttl: Duration = Field(default=duration("1h"), description="How long an identity is remembered.", examples=["10m", "24h"])


class ThrottleConfig(ConfigModel):
    """Throttle: at most ``rate`` events per second through this route (bursts up to ``burst``).

    Events wait in Kafka, in order, while the route is over its rate; none are dropped.
    """

    rate: float = Field(gt=0, description="Events per second.")
    burst: int = Field(default=1, ge=1, description="Events allowed at once after a quiet spell.")


class EnrichConfig(ConfigModel):
    """Enricher: add a value looked up in a table by a key taken from the event."""

    table: str = Field(description="Name of a table in `tables:`.")
    key: Expression = Field(description="Expression giving the lookup key.", examples=["customer_id"])
    into: str = Field(description="Field that receives the looked-up value (visible to `transform`).")
    on_missing: Literal["null", "drop", "fail"] = Field(
        default="null", description="No row for the key: set null, drop the event, or dead-letter it."
    )


# One aggregate field: ``count()`` or ``fn(expression)``; groups: count, fn, expression.
AGGREGATE_FIELD = re.compile(r"^(count)\(\s*\)$|^(sum|min|max|avg|first|last)\((.+)\)$")


class AggregateConfig(ConfigModel):
    """Aggregator: combine the events of one key (the Kafka key) over a window or a count.

    The result is a record of ``key``, ``window_start``, ``window_end``, ``count`` and each of
    ``fields``; the route's ``transform`` shapes it into the output schema. Windows are tumbling
    and follow the router's clock. State is kept on a compacted changelog topic, so a restart
    neither loses nor double-counts events. In a split route the elements are what is counted
    (``sum(line.quantity)``), under the event's key; one event's elements go in as one step.
    """

    window: Duration | None = Field(default=None, description="Tumbling window length; emit when it ends.", examples=["5m"])
    count: int | None = Field(default=None, ge=1, description="Emit after this many events of a key.")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Output field -> count(), sum(expr), min(expr), max(expr), avg(expr), first(expr) or last(expr).",
        examples=[{"events": "count()", "total": "sum(amount)"}],
    )
    previous: bool = Field(
        default=False,
        description="Give each result the key's previous result as `previous` (its count and fields; null for the key's "
        "first window), to compare a window with the one before.",
    )
    empty_windows: bool = Field(
        default=False,
        description="Time windows: a key that had events and then none for a whole window still gets a result for it "
        "(count 0, sums 0), so a source that falls silent shows as a drop. One such result, not one per window for ever.",
    )
    max_keys: int = Field(
        default=250_000,
        ge=1,
        description="Keys one router process holds state for (its partitions'), at most: an event of a new key beyond it "
        "is a dead letter saying so, with a WARNING and `bus_aggregate_keys` at the limit. Each key costs about 0.5 KB; "
        "count windows and `previous` keep every key seen, so a flood of new keys (an id where a customer was meant) "
        "would otherwise grow the router until it is killed, and again at every start. Raise it with the router's memory.",
    )
    emit_when: Expression | None = Field(
        default=None,
        description="Condition on the result (`count`, the fields, `previous`): only results that satisfy it are emitted; "
        "the others just become the next one's `previous`.",
        examples=["previous.usage > 0 and usage < previous.usage * 0.5"],
    )

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            match = AGGREGATE_FIELD.match(text.strip())
            if match is None:
                raise ValueError(f"{name}: {text!r} is not one of count(), sum(x), min(x), max(x), avg(x), first(x), last(x)")
            if match.group(3):
                try:
                    compile_expression(match.group(3))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _window_or_count(self) -> AggregateConfig:
        if (self.window is None) == (self.count is None):
            raise ValueError("give exactly one of window or count")
        if self.empty_windows and self.window is None:
            raise ValueError("empty_windows needs a time window: a count window never ends without events")
        return self


class RouteConfig(ConfigModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Route name, used in metrics and logs.")
    from_: str = Field(alias="from", description="Canonical schema the route reads.", examples=["Payment"])
    when: Expression | None = Field(
        default=None,
        description="Condition (bus.expr) on the event's fields; no condition matches every event.",
        examples=['amount >= 100000 and currency == "usd"'],
    )
    dedup: DedupConfig | None = Field(default=None, description="Drop repeated events (idempotent receiver).")
    enrich: list[EnrichConfig] = Field(default_factory=list, description="Lookups applied before split and transform.")
    split: SplitConfig | None = Field(default=None, description="Emit one event per element of a list.")
    transform: TransformConfig | None = Field(default=None, description="Reshape the event (or convert it to another schema).")
    aggregate: AggregateConfig | None = Field(default=None, description="Combine each key's events over a window or a count.")
    throttle: ThrottleConfig | None = Field(default=None, description="Limit the route's rate.")
    to: list[str] = Field(min_length=1, description="Outbound adapter names that receive matching events.")

    @model_validator(mode="after")
    def _shapes_need_a_transform(self) -> RouteConfig:
        if self.split is not None and (self.transform is None or self.transform.schema_ is None):
            raise ValueError("split needs a transform with a schema: the elements are not events of the route's `from` schema")
        if self.enrich and self.transform is None:
            raise ValueError("enrich needs a transform that places the looked-up values in the output")
        if self.aggregate is not None and (self.transform is None or self.transform.schema_ is None):
            raise ValueError("aggregate needs a transform with a schema: an aggregate is not an event of the route's `from` schema")
        return self

    @property
    def output_schema(self) -> str:
        return self.transform.schema_ if self.transform and self.transform.schema_ else self.from_


class RouterConfig(ConfigModel):
    engine: Literal["aiokafka", "faust"] = Field(
        default="aiokafka",
        description="aiokafka: batches with a commit after every copy is acknowledged (fast, the default); faust: a faust agent.",
    )
    mode: Literal["all", "first"] = Field(
        default="all",
        description="all: every matching route of a schema sends the event; first: only the first matching route, in file order.",
    )


class TableConfig(ConfigModel):
    """A lookup table, kept on a compacted topic and read in full by every router process."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Table name, used by `enrich.table`.")
    rows: dict[str, Any] = Field(default_factory=dict, description="Rows written to the table at start (key -> value).")
    from_: str | None = Field(
        default=None, alias="from", description="Also fill the table from a canonical schema's events (latest per key)."
    )
    key: Expression | None = Field(default=None, description="With `from`: expression giving the row key of an event.")

    @model_validator(mode="after")
    def _from_needs_key(self) -> TableConfig:
        if (self.from_ is None) != (self.key is None):
            raise ValueError("from and key go together")
        return self
