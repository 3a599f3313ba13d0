"""An adapter's context for tests that look only at its start, stop or refusals: no event is
ever handed to its sink (a real hub builds the context with Kafka behind the sink)."""

from __future__ import annotations

import logging

from bus.adapter_api import Context


class NoSink:
    async def publish(self, event: object) -> None: ...


def bare_context(name: str = "x", logger: str = "t") -> Context:
    """A context whose sink takes nothing: for an adapter whose start is what is looked at."""
    return Context(name=name, logger=logging.getLogger(logger), sink=NoSink())  # type: ignore[arg-type]
