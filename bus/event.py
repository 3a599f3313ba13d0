"""The canonical event: what travels on the bus between adapters.

On Kafka an event is three things (docs/architecture.md):

- value: Avro in the Confluent wire format (``bus.codec``);
- key: the business key (order id, customer id), so per-entity order holds end to end;
- headers: CloudEvents Kafka binding, binary mode (``ce_id``, ``ce_source``, ``ce_type``,
  ``ce_time``, ``ce_subject``, ``ce_specversion``) plus ``traceparent``.
"""

from __future__ import annotations

__all__ = ["Event", "new_traceparent", "now_rfc3339"]

import functools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bus.cloudevents import kafka_headers


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def now_rfc3339() -> str:
    """UTC now as RFC 3339 with milliseconds (2026-12-03T06:48:02.883Z). The date and time of day
    are formatted once per second: every event is stamped, and datetime.isoformat took 2.6 us
    where this takes 1.6."""
    now = time.time()
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1000):03d}Z"


def new_traceparent() -> str:
    """A fresh W3C traceparent (version 00, sampled) for an event that arrived without one."""
    random = os.urandom(24).hex()  # one call for the trace id (16 bytes) and the span id (8)
    return f"00-{random[:32]}-{random[32:]}-01"


@dataclass(slots=True)
class Event:
    """One canonical event. ``schema`` is the canonical schema's short name (``Payment``)."""

    schema: str
    data: dict[str, Any]
    source: str
    key: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    type: str = ""
    time: str = field(default_factory=now_rfc3339)
    subject: str | None = None
    traceparent: str = field(default_factory=new_traceparent)

    def meta(self) -> dict[str, Any]:
        """The ``$name`` values that expressions can read."""
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "key": self.key,
            "schema": self.schema,
        }

    def headers(self) -> list[tuple[str, bytes]]:
        """The CloudEvents Kafka binding, binary mode (``bus.cloudevents``)."""
        return kafka_headers(self)

    @classmethod
    def from_kafka(
        cls, schema: str, data: dict[str, Any], key: bytes | None, headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
    ) -> Event:
        h = {name: value.decode() for name, value in headers if value is not None}
        if "bus_absent" in h:  # fields a route's `drop:` removed: absent, not null, for the subscriber
            for name in h["bus_absent"].split(","):
                data.pop(name, None)
        return cls(
            schema=schema,
            data=data,
            source=h.get("ce_source", ""),
            key=key.decode() if key is not None else None,
            id=h.get("ce_id", ""),
            type=h.get("ce_type", ""),
            time=h.get("ce_time", ""),
            subject=h.get("ce_subject"),
            traceparent=h.get("traceparent") or new_traceparent(),
        )
