"""The hub's dashboards as code: an overview, one for an inbound adapter, one for a subscriber.

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39), so no SDK is needed to
build or read them. ``python -m ops.grafana`` writes them to ``ops/grafana/dashboards/`` and
into the Helm chart; a test fails when the committed files drift from this code, and another
runs every panel's query against a real Prometheus scraping a running hub.

Queries follow the metrics in ``bus/metrics.py``, ``bus/kafka/lag.py`` and ``routing/metrics.py``.
Gauges that every process reports alike (``bus_dead_letters``) are aggregated with ``max``;
per-process counts with ``sum``.
"""

from __future__ import annotations

__all__ = ["DASHBOARDS", "panel_queries"]

import re
from collections.abc import Iterator
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Every dashboard shows one or many hubs: namespace, job (one per release and role) and instance
# (one per pod) are variables; every query keeps them apart, so two releases are two series.
SCOPE = 'namespace=~"$namespace",job=~"$job",instance=~"$instance"'
KEEP = "namespace, job"
_METRIC = re.compile(r"\b(bus_[a-z_]+)(?:\{([^}]*)\})?")
_AGGREGATION = re.compile(r"\b(sum|max|min|avg|count)(?: by \(([^)]*)\))? ?\(")


def _scoped(expr: str) -> str:
    """``expr`` limited to the chosen namespace, job and instance, and grouped by namespace and job."""

    def selector(m: re.Match[str]) -> str:
        labels = f"{SCOPE},{m.group(2)}" if m.group(2) else SCOPE
        return f"{m.group(1)}{{{labels}}}"

    def aggregation(m: re.Match[str]) -> str:
        by = f"{KEEP}, {m.group(2)}" if m.group(2) else KEEP
        return f"{m.group(1)} by ({by}) ("

    return _AGGREGATION.sub(aggregation, _METRIC.sub(selector, expr))


def _panel(title: str, queries: dict[str, str], *, unit: str = "short", kind: str = "timeseries", description: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": _scoped(expr), "legendFormat": "{{namespace}}/{{job}} " + legend}
            for i, (legend, expr) in enumerate(queries.items())
        ],
    }


def _quantiles(metric: str, by: str, selector: str = "") -> dict[str, str]:
    return {
        f"p{int(q * 100)} {{{{{by}}}}}": f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{selector}[{RATE}])))"
        for q in (0.5, 0.95, 0.99)
    }


def _variable(name: str, query: str, *, every: bool = False) -> dict[str, Any]:
    """A query variable; ``every``: multi-select with an "All" that matches any value, even none."""
    variable = {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": every,
        "multi": every,
    }
    if every:
        variable |= {"allValue": ".*", "current": {"text": "All", "value": "$__all"}}
    return variable


def _scope_variables() -> list[dict[str, Any]]:
    return [
        _variable("namespace", "label_values(bus_build_info, namespace)", every=True),
        _variable("job", 'label_values(bus_build_info{namespace=~"$namespace"}, job)', every=True),
        _variable("instance", 'label_values(bus_build_info{namespace=~"$namespace",job=~"$job"}, instance)', every=True),
    ]


def _dashboard(uid: str, title: str, rows: list[list[dict[str, Any]]], variables: list[dict[str, Any]]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        width = 24 // len(row)
        for x, panel in enumerate(row):
            panels.append({**panel, "id": len(panels) + 1, "gridPos": {"h": 8, "w": width, "x": x * width, "y": y}})
        y += 8
    datasource = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    return {
        "uid": uid,
        "title": title,
        "tags": ["integration-bus"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource, *_scope_variables(), *variables]},
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    rows = [
        [
            _panel(
                "Events in per adapter",
                {"{{adapter}}": f'sum by (adapter) (rate(bus_inbound_events_total{{outcome="accepted"}}[{RATE}]))'},
                unit="ops",
            ),
            _panel(
                "Inbound errors",
                {
                    "{{adapter}} {{outcome}}": f'sum by (adapter, outcome) (rate(bus_inbound_events_total{{outcome!="accepted"}}[{RATE}]))',
                    "{{server}} server: {{reason}}": f"sum by (server, reason) (rate(bus_http_refused_total[{RATE}]))",
                },
                unit="ops",
                description="rejected and unauthorized (4xx to the sender), unavailable (Kafka did not ack in time), "
                "dead_lettered (kept on the inbound DLQ); and requests the webhook server refused before any adapter "
                "saw them: no_route (a sender posting to a path no adapter serves), method_not_allowed, malformed, "
                "head_too_large, upgrade, transfer_coding, pipelined, too_many_connections; and, as the ops server, "
                "requests to the ops port that are not HTTP (malformed, head_too_large).",
            ),
            _panel(
                "Routed per route",
                {"{{route}} {{outcome}}": f"sum by (route, outcome) (rate(bus_routed_events_total[{RATE}]))"},
                unit="ops",
            ),
        ],
        [
            _panel(
                "Deliveries",
                {"{{subscriber}} {{outcome}}": f"sum by (subscriber, outcome) (rate(bus_deliveries_total[{RATE}]))"},
                unit="ops",
            ),
            _panel(
                "Delivery error ratio",
                {
                    "{{subscriber}}": f'sum by (subscriber) (rate(bus_deliveries_total{{outcome=~"retried|dead_lettered"}}[{RATE}]))'
                    f" / sum by (subscriber) (rate(bus_delivery_attempts_total[{RATE}]))"
                },
                unit="percentunit",
            ),
            _panel(
                "End-to-end latency",
                _quantiles("bus_end_to_end_seconds", "subscriber"),
                unit="s",
                description="Event time (ce_time) to the target's acceptance.",
            ),
        ],
        [
            _panel("Consumer lag", {"{{group}}": "sum by (group) (bus_consumer_lag)"}, description="Records after the committed offset."),
            _panel("Dead letters kept", {"{{subscriber}}": "max by (subscriber) (bus_dead_letters)"}),
            _panel(
                "Circuit state",
                {"{{subscriber}}": "max by (subscriber) (bus_circuit_state)"},
                kind="stat",
                description="0 closed, 1 half-open, 2 open.",
            ),
        ],
        [
            _panel(
                "Ledger",
                {"{{subscriber}} {{state}}": "sum by (subscriber, state) (bus_ledger_events)"},
                description="entered = delivered + dead_lettered + in_flight; a gap means events unaccounted for (bus reconcile).",
            ),
            _panel("Seconds since commit", {"{{group}}": "max by (group) (bus_consumer_seconds_since_commit)"}, unit="s"),
            _panel(
                "Processes",
                {
                    "RSS {{instance}}": "process_resident_memory_bytes",
                    "CPU {{instance}}": f"rate(process_cpu_seconds_total[{RATE}])",
                },
                unit="short",
            ),
        ],
        [
            _panel(
                "Event loop held up (p99)",
                {
                    "{{instance}}": f"histogram_quantile(0.99, sum by (instance, le) (rate(bus_event_loop_lag_seconds_bucket[{RATE}])))",
                },
                unit="s",
                description="How late each process runs what is due. Seconds: starved of CPU or blocked; nothing runs "
                "meanwhile, not even Kafka's heartbeats (BusEventLoopHeldUp).",
            ),
        ],
    ]
    return _dashboard("bus-overview", "Integration bus: overview", rows, [])


def adapter() -> dict[str, Any]:
    sel = '{adapter="$adapter"}'
    rows = [
        [
            _panel("Events by outcome", {"{{outcome}}": f"sum by (outcome) (rate(bus_inbound_events_total{sel}[{RATE}]))"}, unit="ops"),
            _panel(
                "Rejected share",
                {
                    "rejected": f'sum(rate(bus_inbound_events_total{{adapter="$adapter",outcome!="accepted"}}[{RATE}]))'
                    f" / sum(rate(bus_inbound_events_total{sel}[{RATE}]))"
                },
                unit="percentunit",
            ),
        ],
        [
            _panel("Produce latency (to Kafka's ack)", _quantiles("bus_produce_seconds", "adapter", sel), unit="s"),
            _panel(
                "Accepted in the last hour",
                {"accepted": 'sum(increase(bus_inbound_events_total{adapter="$adapter",outcome="accepted"}[1h]))'},
                kind="stat",
            ),
            _panel(
                "Paused by an operator",
                {"paused": 'max(bus_inbound_paused{adapter="$adapter"})'},
                kind="stat",
                description="1 while paused (POST /api/v1/inbound/NAME/pause): its source is not read until resumed.",
            ),
        ],
        [
            _panel(
                "Processes reading the source",
                {"reading": 'sum(bus_inbound_lease{adapter="$adapter"})'},
                kind="stat",
                description="For a source read by one process at a time (pollers, postgres_cdc, file, mqtt): 1 is right; "
                "0 means no process holds its lease (each one's /readyz says why), 2 or more a holder cut off from Kafka "
                "reading on while another took over. Empty for sources every process reads.",
            ),
            _panel(
                "Lease changes",
                {"{{change}}": f'sum by (change) (increase(bus_inbound_lease_changes_total{{adapter="$adapter"}}[{RATE}]))'},
                description="gained: a standby took the source over; lost: a holder cut off from Kafka; handed_over: a holder "
                "that could not read the source let another try.",
            ),
        ],
    ]
    return _dashboard(
        "bus-adapter",
        "Integration bus: inbound adapter",
        rows,
        [_variable("adapter", _scoped("label_values(bus_inbound_events_total, adapter)"))],
    )


def subscriber() -> dict[str, Any]:
    sel = '{subscriber="$subscriber"}'
    rows = [
        [
            _panel("Deliveries by outcome", {"{{outcome}}": f"sum by (outcome) (rate(bus_deliveries_total{sel}[{RATE}]))"}, unit="ops"),
            _panel("Attempts", {"attempts": f"sum(rate(bus_delivery_attempts_total{sel}[{RATE}]))"}, unit="ops"),
            _panel(
                "Rate-limit waits",
                {"waiting": f"sum(rate(bus_rate_limit_wait_seconds_total{sel}[{RATE}]))"},
                unit="s",
                description="Seconds per second spent waiting for the subscriber's rate limit.",
            ),
        ],
        [
            _panel("Call latency", _quantiles("bus_delivery_seconds", "subscriber", sel), unit="s"),
            _panel("End-to-end latency", _quantiles("bus_end_to_end_seconds", "subscriber", sel), unit="s"),
        ],
        [
            _panel("Ledger", {"{{state}}": f"sum by (state) (bus_ledger_events{sel})"}),
            _panel("Lag", {"{{partition}}": 'sum by (partition) (bus_consumer_lag{group=~".*\\\\.deliver\\\\.$subscriber"})'}),
            _panel("Dead letters kept", {"dead letters": f"max(bus_dead_letters{sel})"}, kind="stat"),
            _panel("Circuit", {"state": f"max(bus_circuit_state{sel})"}, kind="stat", description="0 closed, 1 half-open, 2 open."),
        ],
    ]
    return _dashboard(
        "bus-subscriber",
        "Integration bus: subscriber",
        rows,
        [_variable("subscriber", _scoped("label_values(bus_deliveries_total, subscriber)"))],
    )


DASHBOARDS = {"overview": overview, "adapter": adapter, "subscriber": subscriber}


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) for every query of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
