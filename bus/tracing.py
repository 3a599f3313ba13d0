"""Tracing: the W3C ``traceparent`` travels with every event (a Kafka header, see bus/event.py);
OpenTelemetry spans are made only when an exporter is configured.

With ``tracing.exporter: none`` (the default) nothing here runs on the event path: callers test
``tracing.enabled`` first, and OpenTelemetry is not even imported. With ``otlp`` (or ``console``)
the hub records a span where an event enters (``receive <adapter>``, child of the sender's
traceparent) and one per delivery attempt (``deliver <subscriber>``, child of the event's), and
the target receives the delivery span's traceparent: one trace from the source's request to the
target's call, across Kafka and the router. The SDK is the optional extra ``[tracing]``.
"""

from __future__ import annotations

__all__ = ["NO_TRACING", "Tracing", "TracingConfig"]

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field

from bus.config.base import ConfigModel
from bus.errors import BusError
from bus.logs import about_event


class TracingConfig(ConfigModel):
    exporter: Literal["none", "otlp", "console"] = Field(
        default="none", description="Where spans go: none (traceparent still travels, no spans), otlp (OTLP/HTTP), console (stderr)."
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL; default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or http://localhost:4318/v1/traces.",
        examples=["http://otel-collector:4318/v1/traces"],
    )
    service_name: str = Field(default="integration-bus", description="The service.name resource attribute.")
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Share of new traces recorded (a sender's sampled flag wins).")


class Tracing:
    """Spans for one hub. ``enabled`` is False without an exporter, and ``span`` is then never called."""

    def __init__(self, config: TracingConfig | None = None) -> None:
        self.config = config or TracingConfig()
        self.enabled = self.config.exporter != "none"
        self._provider: Any = None
        self._tracer: Any = None
        self._propagator: Any = None
        if self.enabled:
            self._setup()

    def _setup(self) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            raise BusError(
                f"tracing.exporter is {self.config.exporter!r} but OpenTelemetry is not installed: pip install 'integration-bus[tracing]'"
            ) from exc
        exporter: SpanExporter
        if self.config.exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=self.config.endpoint) if self.config.endpoint else OTLPSpanExporter()
        # A provider of the hub's own, not the global one: several hubs in one process (tests) stay apart.
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": self.config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(self.config.sample_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self._tracer = self._provider.get_tracer("integration-bus")
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        traceparent: str | None,
        *,
        kind: Literal["server", "consumer", "client"],
        attributes: Mapping[str, str] | None = None,
    ) -> Iterator[str | None]:
        """A span, child of ``traceparent``; yields the traceparent to pass on (the span's own).
        An exception inside marks the span as failed and propagates."""
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else None
        kinds = {"server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER, "client": SpanKind.CLIENT}
        with self._tracer.start_as_current_span(name, context=parent, kind=kinds[kind], attributes=dict(attributes or {})):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            child = carrier.get("traceparent", traceparent)
            with about_event(child):  # log lines inside carry this span's ids
                yield child

    async def shutdown(self) -> None:
        """Export what is buffered, then stop (at hub stop). The SDK exports from a thread and
        blocks while it does, so it is waited for off the event loop."""
        provider, self._provider = self._provider, None
        self.enabled = False
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)


NO_TRACING = Tracing()
