"""``bus test`` and ``bus routes explain``: run routes on given events, without a broker.

A test file (YAML)::

    tests:
      - name: a large USD payment reaches the ERP only
        input: {schema: Payment, event: {payment_id: p1, amount: 150000, currency: usd}}
        # or through an inbound adapter's mapping:  input: {inbound: payments, body: {...}}
        expect:
          erp: [{payment_id: p1, amount: 150000, currency: usd}]   # what each subscriber receives
          support: []                                               # receives nothing
        sent:                                                       # what each one's adapter sends (optional)
          erp: [{body: {external_id: p1, amount_cents: 150000}, url: "https://erp.example.com/api/payments"}]
        dead_letters: []                                            # routes expected to fail (optional)

Subscribers not named under ``expect`` are not checked. Outputs are checked against their Avro
schema as the hub would encode them. The same compiled routes as ``bus run`` are used.
``sent`` renders every expression, template and body block of the subscriber's adapter config
for each event it receives (``body``, ``url``, ``headers.NAME``, ``topic``, ``columns`` ...);
an expected entry names only the parts it checks. Secrets from the environment are masked.
"""

from __future__ import annotations

__all__ = ["Explanation", "RouteTester", "TestCase", "TestResult", "load_tests"]

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bus.adapter_api import EmitSpec
from bus.codec import Codec
from bus.config.fields import expression_fields
from bus.config.loader import LoadedConfig
from bus.config.yaml_files import dotted, read_marked
from bus.errors import BusError, ConfigError, ConfigIssue, ExpressionError
from bus.event import Event
from bus.expr import compile_expression, compile_template
from bus.expr.body import Body
from bus.jsontext import dumps as json_dumps
from bus.kafka.headers import header_text
from bus.kafka.topics import TopicNames
from bus.logs import Redactor
from bus.mapping import Emitter
from routing.dispatch import Dispatcher
from routing.router import Router
from schemas.catalog import SchemaCatalog


class TestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: str | None = Field(default=None, alias="schema")
    event: dict[str, Any] | None = None
    inbound: str | None = None
    body: Any = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> TestInput:
        if (self.schema_ is None or self.event is None) and (self.inbound is None or self.body is None):
            raise ValueError("give either schema and event, or inbound and body")
        return self


class TestCase(BaseModel):
    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid")

    name: str
    input: TestInput
    expect: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    sent: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    dead_letters: list[str] | None = None


@dataclass
class TestResult:
    __test__ = False
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Explanation:
    lines: list[str]
    received: dict[str, list[dict[str, Any]]]
    dead_letters: list[str]
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def load_tests(path: Path) -> list[TestCase]:
    """The cases of a route test file (``tests:``, a list), each field's error naming its line."""
    raw, marks = read_marked(path)
    listed = raw.get("tests", [])
    if not isinstance(listed, list):
        raise ConfigError([ConfigIssue(*marks.find(("tests",), str(path)), "tests", "must be a list of test cases (- name: ...)")])
    cases: list[TestCase] = []
    issues: list[ConfigIssue] = []
    for i, case in enumerate(listed):
        try:
            cases.append(TestCase.model_validate(case))
        except ValidationError as exc:
            for err in exc.errors(include_input=False):
                loc = ("tests", i, *err["loc"])
                issues.append(ConfigIssue(*marks.find(loc, str(path)), dotted(loc), err["msg"]))
    if issues:
        raise ConfigError(issues)
    return cases


def _plain(value: Any) -> Any:
    """JSON-comparable form, as a target would read it (timestamps as RFC 3339, decimals as text)."""
    return json.loads(json_dumps(value))


class RouteTester:
    def __init__(self, loaded: LoadedConfig, catalog: SchemaCatalog) -> None:
        hub = loaded.hub
        self.tables = {t.name: dict(t.rows) for t in hub.tables}
        self.router = Router(hub.routes, hub.router, tables=self.tables)
        self.codec = Codec()
        self._schemas = set(catalog.names())
        for i, name in enumerate(catalog.names(), start=1):
            self.codec.add(name, i, catalog.get(name).parsed)
        self.topics = TopicNames(hub.kafka.topic_prefix)
        self.dispatcher = Dispatcher(self.router, codec=self.codec, topics=self.topics, tables=hub.tables)
        self._subscriber_of = {self.topics.delivery(name): name for name in self.router.subscribers()}
        self._outbound = {c.name: c for c in loaded.outbound}
        self._redactor = Redactor()
        self._redactor.remember(loaded.secrets)
        self._emitters = {}
        for config in loaded.inbound:
            emit = getattr(config, "emit", None)
            if isinstance(emit, EmitSpec):
                self._emitters[config.name] = Emitter(emit, source=f"/inbound/{config.name}")

    def subscriber_of(self, topic: str) -> str | None:
        """The subscriber whose delivery topic ``topic`` is (None for dead letters, tables, state)."""
        return self._subscriber_of.get(topic)

    def explain(self, given: TestInput) -> Explanation:
        lines: list[str] = []
        received: dict[str, list[dict[str, Any]]] = {}
        sent: dict[str, list[dict[str, Any]]] = {}
        dead: list[str] = []
        if given.inbound is not None:
            emitter = self._emitters.get(given.inbound)
            if emitter is None:
                raise BusError(f"no inbound adapter named {given.inbound!r} with an emit mapping")
            event = emitter.build(given.body)  # raises EventRejected: what the source would get as a 400
            schema, data = event.schema, event.data
            meta = {**event.meta(), **given.meta}
            lines.append(f"inbound {given.inbound}: {schema} {json.dumps(_plain(data), sort_keys=True)}")
        else:
            assert given.schema_ is not None and given.event is not None
            schema, data, meta = given.schema_, given.event, {"id": "test-event", "key": None, **given.meta}
            if schema not in self._schemas:  # a KeyError and a traceback, for a test's typo
                raise BusError(f"no schema named {schema!r} (schemas: {', '.join(sorted(self._schemas))})")
        self.codec.validate(schema, data)
        # The hub's own path from here: the record as an inbound adapter produces it, planned by
        # the router's Dispatcher, each delivery decoded as its subscriber decodes it.
        key = meta.get("key")
        event = Event(
            schema=schema,
            data=data,
            source=str(meta.get("source") or "/test"),
            key=key,
            id=str(meta.get("id") or "test-event"),
            type=schema,
        )
        if meta.get("subject") is not None:
            event.subject = str(meta["subject"])
        sends = self.dispatcher.plan(
            key.encode() if key is not None else None, self.codec.encode(schema, data), event.headers(), "bus test"
        )
        decision = self.dispatcher.last_decision
        assert decision is not None
        taken = {o.route.name: o for o in decision.outcomes}
        failed = {
            header_text(send.headers, "bus_route"): header_text(send.headers, "bus_error")
            for send in sends
            if send.topic == self.topics.router_dead_letter
        }
        for route in self.router.routes:
            if route.schema != schema:
                continue
            outcome = taken.get(route.name)
            if outcome is None:
                why = "skipped (first-match mode)" if self.router.mode == "first" and decision.outcomes else "condition false"
                lines.append(f"  route {route.name}: {why}")
            elif route.name in failed:
                dead.append(route.name)
                lines.append(f"  route {route.name}: FAILED -> dead letter: {failed[route.name]}")
            elif outcome.status == "dropped":
                lines.append(f"  route {route.name}: dropped ({outcome.reason})")
            elif outcome.status == "aggregated":
                lines.append(f"  route {route.name}: aggregated (emitted when its window or count closes)")
            else:
                lines.append(f"  route {route.name}: matched, {len(outcome.outputs)} event(s) to {', '.join(route.targets)}")
        for send in sends:
            target = self._subscriber_of.get(send.topic)
            if target is None:
                continue  # a dead letter, a table feed or aggregate state
            out_schema, decoded = self.codec.decode(send.value or b"")
            delivered = Event.from_kafka(out_schema, decoded, send.key, send.headers)
            body = _plain(delivered.data)
            received.setdefault(target, []).append(body)
            lines.append(f"    -> {target}: {out_schema} {json.dumps(body, sort_keys=True)}")
            if target in self._outbound:
                request = self.render(self._outbound[target], delivered.data, {**meta, **delivered.meta()})
                sent.setdefault(target, []).append(request)
                lines.extend(f"       {part}: {json.dumps(value, sort_keys=True)}" for part, value in request.items())
        if not decision.outcomes:
            lines.append("  no route matched: the event goes nowhere")
        return Explanation(lines, received, dead, sent)

    def render(self, config: BaseModel, data: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """What an outbound adapter sends for one event: each of its expressions, templates and
        body blocks rendered (a body left out is the event's fields)."""
        rendered: dict[str, Any] = {}
        if "body" in type(config).model_fields and getattr(config, "body", None) is None:
            rendered["body"] = _plain(data)
        for loc, kind, value in expression_fields(config):
            part = ".".join(str(p) for p in loc)
            try:
                if kind == "body":
                    result: Any = Body(value).render_fields(data, meta)
                elif kind == "template":
                    result = compile_template(value)(data, meta)
                else:
                    result = compile_expression(value)(data, meta)
            except ExpressionError as exc:
                result = f"<fails: {exc}>"
            rendered[part] = self._redactor.redact_tree(_plain(result))
        return rendered

    def run(self, case: TestCase) -> TestResult:
        result = TestResult(case.name)
        try:
            explanation = self.explain(case.input)
        except BusError as exc:
            result.failures.append(f"input rejected: {exc}")
            return result
        for subscriber, expected in case.expect.items():
            got = explanation.received.get(subscriber, [])
            if got != _plain(expected):
                diff = difflib.unified_diff(
                    json.dumps(_plain(expected), indent=2, sort_keys=True).splitlines(),
                    json.dumps(got, indent=2, sort_keys=True).splitlines(),
                    f"expected at {subscriber}",
                    f"received by {subscriber}",
                    lineterm="",
                )
                result.failures.append("\n".join(diff))
        for subscriber, expected_requests in case.sent.items():
            got_requests = explanation.sent.get(subscriber, [])
            # Each expected request names the parts it checks; the rest of what is sent is not compared.
            shown = [{part: request.get(part) for part in want} for request, want in zip(got_requests, expected_requests, strict=False)]
            if len(got_requests) != len(expected_requests) or shown != _plain(expected_requests):
                diff = difflib.unified_diff(
                    json.dumps(_plain(expected_requests), indent=2, sort_keys=True).splitlines(),
                    json.dumps(
                        shown if len(got_requests) == len(expected_requests) else got_requests, indent=2, sort_keys=True
                    ).splitlines(),
                    f"expected sent by {subscriber}",
                    f"sent by {subscriber}",
                    lineterm="",
                )
                result.failures.append("\n".join(diff))
        if case.dead_letters is not None and sorted(case.dead_letters) != sorted(explanation.dead_letters):
            result.failures.append(f"dead letters: expected routes {sorted(case.dead_letters)}, got {sorted(explanation.dead_letters)}")
        if result.failures:
            result.failures.append("what happened:\n" + "\n".join(explanation.lines))
        return result
