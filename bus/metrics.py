"""The hub's Prometheus instruments, defined once. Labels name adapters, routes and subscribers,
never event values (bounded cardinality). ops/ serves them on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics

# No `_created` series: one more series per counter and histogram that no dashboard or alert
# reads, and that Prometheus stores as a sample that changes only at a restart.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD = Info("bus_build", "The hub's version and the role this process runs.")

INBOUND_EVENTS = Counter(
    "bus_inbound_events_total",
    "Events received by inbound adapters, by outcome (accepted, rejected, unavailable, dead_lettered: kept on the inbound "
    "DLQ, skipped: passed over as configured, such as a kafka inbound's tombstones).",
    ["adapter", "outcome"],
)
HTTP_REFUSED = Counter(
    "bus_http_refused_total",
    "Requests the webhook server (server=webhooks) answered before any inbound adapter saw them, and the ops port's "
    "(server=ops: malformed and head_too_large only), by reason: malformed (not valid "
    "HTTP/1.1; 400), head_too_large (431), upgrade (h2c or WebSocket; 400), transfer_coding (a Transfer-Encoding other "
    "than chunked; 501), no_route (404), method_not_allowed (405), "
    "pipelined (429: more than 64 requests sent ahead of their answers), too_many_connections (closed unanswered: "
    "http.max_connections open).",
    ["server", "reason"],
)
PRODUCE_SECONDS = Histogram(
    "bus_produce_seconds",
    "Time from publish to Kafka's acknowledgement.",
    ["adapter"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROUTER_EVENTS = Counter("bus_router_events_total", "Canonical events the router has decided on, by schema.", ["schema"])
ROUTER_UNMATCHED = Counter("bus_router_unmatched_events_total", "Events that matched no route, by schema.", ["schema"])
DELIVERIES = Counter(
    "bus_deliveries_total",
    "Outbound deliveries per subscriber, by outcome (delivered, retried, dead_lettered).",
    ["subscriber", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "bus_delivery_seconds",
    "Time of one successful delivery call to the target.",
    ["subscriber"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
END_TO_END_SECONDS = Histogram(
    "bus_end_to_end_seconds",
    "From the event's time (ce_time, set by the source or on arrival) to the target's acceptance.",
    ["subscriber"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
DEAD_LETTERS = Gauge(
    "bus_dead_letters",
    "Records kept on a subscriber's dead-letter topic (all partitions, handled or not; every process "
    "reports the same number, so aggregate with max).",
    ["subscriber"],
)
DELIVERY_LOST = Counter(
    "bus_delivery_lost_total",
    "Events removed from a subscriber's delivery topic by its retention before they were delivered or dead-lettered "
    "(the subscriber was behind for longer than the retention).",
    ["subscriber"],
)
ROUTER_LOST = Counter(
    "bus_router_lost_total",
    "Events removed from a canonical topic by its retention before the router read them (it was stopped or behind "
    "for longer than the retention).",
    ["topic"],
)
DELIVERY_ATTEMPTS = Counter("bus_delivery_attempts_total", "Calls made to targets, first tries and retries alike.", ["subscriber"])
CIRCUIT_STATE = Gauge("bus_circuit_state", "Circuit breaker state per subscriber: 0 closed, 1 half-open, 2 open.", ["subscriber"])
CIRCUIT_OPENED = Counter("bus_circuit_opened_total", "Times a subscriber's circuit opened.", ["subscriber"])
RATE_LIMIT_WAIT = Counter("bus_rate_limit_wait_seconds_total", "Seconds deliveries waited for the subscriber's rate limit.", ["subscriber"])
SECONDS_SINCE_COMMIT = Gauge(
    "bus_consumer_seconds_since_commit",
    "Seconds since a consumer last committed while it had work (stalled consumers, faust #175/#640).",
    ["group"],
)
LEDGER = Gauge(
    "bus_ledger_events",
    "The delivery ledger per subscriber, over the partitions this process owns: entered (events on the "
    "delivery topic), delivered and dead_lettered (settled and committed, kept in Kafka across restarts), "
    "in_flight (entered, not yet committed). Sum over processes: entered = delivered + dead_lettered + in_flight.",
    ["subscriber", "state"],
)
COMPONENT_RESTARTS = Counter(
    "bus_component_restarts_total", "Times a component's background task died and the supervisor restarted the component.", ["component"]
)
KAFKA_ERRORS = Counter(
    "bus_kafka_errors_total",
    "Kafka requests that failed in the hub's own code after the client's retries (produce, commit, ledger, "
    "dead_letter), by component; the hub retries each one. A rise means the cluster is moving or struggling.",
    ["component", "operation"],
)
KAFKA_CLIENT_WARNINGS = Counter(
    "bus_kafka_client_warnings_total",
    "Warnings and errors aiokafka logged, by the part of the client (producer.sender, consumer.fetcher, "
    "consumer.group_coordinator, ...): the faults it retried by itself (a moved leader, a timed-out request, a lost "
    "coordinator), which never reach the hub's own code. The log line says which.",
    ["component"],
)
EVENT_LOOP_LAG = Histogram(
    "bus_event_loop_lag_seconds",
    "How much later than due the process's event loop ran a timer, sampled 4 times a second. Seconds mean the "
    "process was held up (starved of CPU, or a call that blocks the loop): no heartbeat, webhook or delivery ran.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMPONENT_UP = Gauge("bus_component_up", "1 while a supervised component runs, 0 while it is down or being restarted.", ["component"])
INBOUND_LEASE = Gauge(
    "bus_inbound_lease",
    "1 in the one hub process that reads a source read by one process at a time (pollers, postgres_cdc, file, mqtt), "
    "0 in the others, which stand by to take over.",
    ["adapter"],
)
INBOUND_LEASE_CHANGES = Counter(
    "bus_inbound_lease_changes_total",
    "Times this process took a source's lease over from another (gained, after standing by), lost it while reading "
    "(cut off from Kafka while another took over), or handed it over (handed_over: it could not read the source).",
    ["adapter", "change"],
)
INBOUND_PAUSED = Gauge(
    "bus_inbound_paused",
    "1 while an operator has paused the inbound adapter (POST /api/v1/inbound/NAME/pause): its source is not read, "
    "a webhook answers 503; 0 otherwise.",
    ["adapter"],
)
STRANDED_EVENTS = Gauge(
    "bus_stranded_events",
    "Work left on the topics of a subscriber no longer in the config (removed or renamed), as found at this process's "
    "start: undelivered (events past its delivery group's committed offsets) and dead_letters (open ones); _in.NAME: an inbound "
    "adapter no longer in the config, its open inbound dead letters. Nothing reads them.",
    ["subscriber", "kind"],
)
SUBSCRIBER_STATE = Gauge(
    "bus_subscriber_state",
    "A subscriber's delivery state: 1 for the current one of healthy, retrying (events failing and being retried), "
    "circuit_open (no calls made; events wait in Kafka), paused (by an operator; events wait in Kafka).",
    ["subscriber", "state"],
)
MIGRATION_ROWS = Counter(
    "bus_migration_rows_total",
    "Rows a migration run has handled, by outcome: read and refused count source rows; written, unchanged and failed "
    "(a target refused it) count records, one per target a row goes to.",
    ["migration", "outcome"],
)
MIGRATION_ROWS_EXPECTED = Gauge("bus_migration_rows_expected", "Rows the running migration's source holds (0: not known).", ["migration"])
CONNECTION_STATE = Gauge(
    "bus_connection_state",
    "OAuth2 connection state: 1 for the state it is in (connected, refresh failing, consent lost, no consent), 0 for the others.",
    ["connection", "state"],
)
CONNECTION_REFRESHES = Counter(
    "bus_connection_refreshes_total",
    "Token refreshes of OAuth2 connections, by outcome: refreshed, failed (the endpoint; retried), consent lost.",
    ["connection", "outcome"],
)
