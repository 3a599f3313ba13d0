"""One source row through the hub's own path, without Kafka: mapped by the migration's ``emit``
(an inbound's mapping), checked against its schema, encoded, planned by the router's Dispatcher
(the one ``bus run`` uses), and each copy for a subscriber decoded as its delivery worker decodes
it. ``plan`` counts what comes out; ``run`` hands it to the subscribers' outbound adapters.
"""

from __future__ import annotations

__all__ = ["Routed", "RowFlow", "find_migration", "refusal_reason"]

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.app.route_tests import RouteTester
from bus.config.loader import LoadedConfig
from bus.config.migrations import MigrationConfig
from bus.errors import BusError, EventRejected
from bus.event import Event
from bus.expr.functions import fixed_now
from bus.logs import REDACTOR
from bus.mapping import Emitter
from schemas.catalog import SchemaCatalog


def find_migration(loaded: LoadedConfig, name: str) -> MigrationConfig:
    migration = next((m for m in loaded.hub.migrations if m.name == name), None)
    if migration is None:
        known = ", ".join(m.name for m in loaded.hub.migrations) or "none"
        raise BusError(f"no migration named {name!r} in the config (migrations: {known})")
    return migration


def refusal_reason(exc: Exception) -> str:
    """Why a row is refused, as the plan and the report show it (secrets redacted)."""
    text = str(exc) if isinstance(exc, EventRejected | ValueError) else f"{type(exc).__name__}: {exc}"
    # A reason can quote the value, and a value can be no text (a lone surrogate): shown escaped.
    return REDACTOR.redact(text.encode("utf-8", "backslashreplace").decode())


@dataclass(slots=True)
class Routed:
    key: str  # the row's key (emit.key; the event id without one)
    digest: str  # of the mapped event's content
    deliveries: list[tuple[str, str, Event]] = field(default_factory=list)  # (subscriber, route, the event it receives)
    failed_routes: list[str] = field(default_factory=list)  # routes that failed on this row (a transform error)


class RowFlow:
    def __init__(self, loaded: LoadedConfig, catalog: SchemaCatalog, migration: MigrationConfig) -> None:
        self.migration = migration
        self.tester = RouteTester(loaded, catalog)
        self.codec = self.tester.codec
        self.wanted = set(migration.routes) or {r.name for r in loaded.hub.routes if r.from_ == migration.emit.schema_}
        self.emitter = Emitter(migration.emit, source=f"/migration/{migration.name}")
        outbound = {c.name for c in loaded.outbound}
        compiled = [r for r in self.tester.router.routes if r.name in self.wanted]
        self.subscribers = sorted({t for r in compiled for t in r.targets if t in outbound})
        # The events' time (``$time``): the job's own, so an event made again on resume is the same
        # event (``at``; now() in mappings is fixed the same way, bus.expr.functions.fixed_now).
        self.time: str | None = None

    @contextmanager
    def at(self, when: datetime) -> Iterator[None]:
        """Rows routed inside are made at ``when``: their ``$time``, and every ``now()`` in the
        migration's mapping and in its targets' mappings (rendered for the journal, then again
        when delivered, and again by a resumed run: all must agree)."""
        self.time = f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"
        try:
            with fixed_now(when):
                yield
        finally:
            self.time = None

    def route(self, row: Any, where: str) -> Routed:
        """Raises what makes the row unfit (EventRejected, a schema error): the row is refused."""
        if isinstance(row, Exception):  # a line of a file that could not be read
            raise row
        event = self.emitter.build(row, new_id=False)  # the id is made below, from the key
        if self.time is not None:
            event.time = self.time
        self.codec.validate(event.schema, event.data)
        encoded = self.codec.encode(event.schema, event.data)
        # The content's digest: of its Avro encoding, which is canonical (one encoding per value of
        # the schema), whatever the source's own types were (a CSV's text, a table's numbers).
        content = hashlib.sha256(encoded).hexdigest()[:32]
        key = event.key if event.key is not None else content
        if not event.id:  # no emit.id, or none in this row: a stable id, the same row makes the same event in every run
            event.id = f"migrate-{self.migration.name}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
        dispatcher = self.tester.dispatcher
        sends = dispatcher.plan(event.key.encode() if event.key is not None else None, encoded, event.headers(), where)
        routed = Routed(key, content)
        for send in sends:
            if send.route not in self.wanted:
                continue
            subscriber = self.tester.subscriber_of(send.topic)
            if subscriber is not None:
                if send.value is encoded and dispatcher.last_input is not None:
                    # An unchanged copy: the same bytes plan() decoded, so the same record (a copy
                    # of it: from_kafka may drop fields); a second decode cost 4 % of a run.
                    schema, data = event.schema, dict(dispatcher.last_input)
                else:
                    schema, data = self.codec.decode(send.value or b"")
                routed.deliveries.append((subscriber, send.route, Event.from_kafka(schema, data, send.key, send.headers)))
            elif send.topic == self.tester.topics.router_dead_letter:
                routed.failed_routes.append(send.route)
        return routed
