"""What the management API answers, as pydantic models: the OpenAPI document is generated from
them (``ops.api.openapi``), never written by hand, and every answer is one of them."""

from __future__ import annotations

__all__ = [
    "BackfillDone",
    "BackfillRequest",
    "ConfigIssueOut",
    "DeadLetterAction",
    "DeadLetterDone",
    "DeadLetterPage",
    "DeadLetterSummary",
    "EventLineage",
    "EventSearch",
    "FailedBackfill",
    "InboundNode",
    "InboundPauseState",
    "LedgerBalance",
    "MigrationRun",
    "MigrationRuns",
    "PauseRequest",
    "PauseState",
    "PositionChange",
    "PositionChanged",
    "PositionState",
    "Problem",
    "ReconcileBalance",
    "RedeliveryDone",
    "RedeliveryRequest",
    "RouteNode",
    "SubscriberDetail",
    "SubscriberNode",
    "SupersededEvent",
    "SupersededLetter",
    "Topology",
    "ValidationReport",
]

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MAX_REASON = 500  # characters: a sentence and a ticket link, not a document


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Out):
    """RFC 9457 problem details: the one error shape of the API."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="The HTTP status's phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, and what to do about it.")
    instance: str | None = Field(default=None, description="The request path.")


class InboundNode(_Out):
    name: str
    type: str = Field(description="The adapter type.")
    state: Literal["running", "standby", "paused", "starting", "unhealthy"] = Field(
        description="starting: its system could not be reached yet. standby: a source one process reads at a time (a poller, "
        "postgres_cdc, file, mqtt) that another hub process reads now; this one takes over if that one stops. paused: by an "
        "operator (POST /inbound/{name}/pause): its source is not read, a webhook answers 503, until resumed."
    )
    paused_by: str | None = Field(default=None, description="Who paused it (a token's name), while paused.")
    paused_reason: str | None = Field(default=None, description="Why, as the operator who paused it said (null if they said nothing).")
    paused_at: str | None = Field(default=None, description="When it was paused (RFC 3339), while paused.")
    detail: str = Field(default="", description="Why it is not running, secrets masked.")
    schema_: str | None = Field(default=None, alias="schema", description="The canonical schema it emits.")
    topic: str | None = Field(default=None, description="The canonical topic it publishes to.")
    progress: dict[str, int | str] = Field(default_factory=dict, description="What it has done since it started.")
    attention: str = Field(
        default="", description="What to act on while it runs (rows a poll cannot reach, an API repeating its pages); empty when nothing."
    )
    rate: float | None = Field(
        default=None,
        description="Events accepted per second over about the last 10 s, between this call and an earlier one (null on the first call).",
    )


class RouteNode(_Out):
    name: str
    from_: str = Field(alias="from", description="The canonical schema it reads.")
    topic: str = Field(description="The canonical topic it consumes.")
    to: list[str] = Field(description="The subscribers it sends to.")
    output_schema: str = Field(description="The schema of what it sends.")
    matched: int = Field(description="Events whose condition held, since this process started.")
    emitted: int
    dropped: int
    failed: int = Field(description="Events dead-lettered by this route (bus dlq list --subscriber _router).")
    rate_in: float | None = Field(
        default=None,
        description="Events matched per second over about the last 10 s, between this call and an earlier one (null on the first call).",
    )
    rate_out: float | None = Field(
        default=None,
        description="Copies emitted per second over about the last 10 s, between this call and an earlier one (null on the first call).",
    )


class LedgerBalance(_Out):
    entered: int = Field(description="Events that entered the delivery topic (owned partitions).")
    delivered: int
    dead_lettered: int
    in_flight: int = Field(description="Entered, not yet settled (waiting, being retried, or not yet fetched).")


class SubscriberNode(_Out):
    name: str
    type: str = Field(description="The outbound adapter type.")
    state: Literal["healthy", "retrying", "circuit_open", "paused", "starting", "unhealthy", "not_running_here"] = Field(
        description="Delivery state; paused: by an operator (events wait in Kafka); not_running_here: this process does not run "
        "the outbound role."
    )
    paused_by: str | None = Field(default=None, description="Who paused it (a token's name), while paused.")
    paused_reason: str | None = Field(default=None, description="Why, as the operator who paused it said (null if they said nothing).")
    paused_at: str | None = Field(default=None, description="When it was paused (RFC 3339), while paused.")
    since: str | None = Field(default=None, description="When it entered this state (RFC 3339).")
    failing_events: int = 0
    held_keys: int = Field(default=0, description="Keys whose events wait in memory behind an earlier one.")
    buffered: int = Field(default=0, description="Events fetched and not yet settled.")
    last_error: str = Field(default="", description="The last failure, secrets masked.")
    topic: str = Field(description="Its delivery topic.")
    routes: list[str] = Field(description="The routes that send to it.")
    ledger: LedgerBalance | None = Field(
        default=None,
        description="Its ledger balance in this process (null where the outbound role does not run).",
    )
    rate_in: float | None = Field(
        default=None,
        description="Events entering its delivery topic per second over about the last 10 s, between this call and an earlier one "
        "(null on the first call).",
    )
    rate_out: float | None = Field(
        default=None,
        description="Events delivered per second over about the last 10 s, between this call and an earlier one (null on the first call).",
    )


class SubscriberDetail(SubscriberNode):
    progress: dict[str, int | str] = Field(default_factory=dict, description="What its adapter has done since it started.")
    copying: str | None = Field(
        default=None,
        description="A redelivery or backfill the process that answered is writing to it: what, asked when, and how far it is.",
    )


class PauseRequest(_Out):
    """The optional body of a pause: why, for whoever looks next (a resume takes none)."""

    reason: str = Field(
        default="",
        max_length=_MAX_REASON,
        description="Why it is paused (a maintenance window, a ticket): shown with the pause in the topology, `bus status` and "
        "the console, and in the audit line.",
    )

    @field_validator("reason")
    @classmethod
    def _one_line(cls, reason: str) -> str:
        if any(ch < " " or "\x7f" <= ch < "\xa0" for ch in reason):
            raise ValueError("a reason is one line of text: no control characters (line breaks, tabs, escapes)")
        return reason.strip()


class PauseState(_Out):
    """What was asked: every replica delivering to the subscriber obeys within seconds."""

    subscriber: str
    paused: bool
    by: str = Field(description="The token's name: who asked.")
    reason: str = Field(default="", description="Why, as given with the pause.")


class InboundPauseState(_Out):
    """What was asked: every process of the inbound role running the adapter obeys within seconds."""

    inbound: str
    paused: bool
    by: str = Field(description="The token's name: who asked.")
    reason: str = Field(default="", description="Why, as given with the pause.")


class PositionState(_Out):
    """Where a polling source reads from, as the checkpoint topic holds it, against what the config reads now."""

    name: str = Field(description="The inbound adapter.")
    type: str = Field(description="The adapter type.")
    kept_in: Literal["kafka", "the source"] = Field(
        description="kafka: the position lives only on the checkpoint topic. the source: a durable consumer, a consumer group or "
        "a replication slot keeps its place; the saved one is a fallback, shown, not changed."
    )
    reads: dict[str, object] | None = Field(description="What the config reads now: the table or API path, watermark and filter.")
    state: Literal["current", "none", "another-source", "renamed-from"] = Field(
        description="current: used at the next start. none: its next start reads from the start. another-source: saved while "
        "it read something else (see differs); NOT used, the source is read from its start unless adopted. renamed-from: none "
        "under this name; a former name's is taken at the next start."
    )
    position: dict[str, object] | None = Field(default=None, description="The saved position (a watermark, a cursor).")
    saved_in: dict[str, object] | None = Field(
        default=None, description="What the position was saved in (null: saved before positions said)."
    )
    differs: list[str] = Field(default_factory=list, description="The parts of what is read that changed since it was saved.")
    renamed_from: str | None = Field(default=None, description="The former name whose position is taken (state renamed-from).")
    paused_by: str | None = Field(default=None, description="Who paused the inbound, while paused: a position is changed only then.")


class PositionChange(_Out):
    """The body of an adopt (a reset takes none)."""

    force: bool = Field(
        default=False,
        description="Adopt even when more than the filter changed (the same source under another name): the position is then "
        "read as a place in what the config reads now.",
    )


class PositionChanged(_Out):
    """What a reset or an adopt did."""

    inbound: str
    action: Literal["reset", "adopt"]
    changed: bool = Field(description="false: there was nothing to do (no position to forget, or it was current already).")
    said: str = Field(description="What it did, in a sentence.")
    before: PositionState = Field(description="The position as it stood before.")


class Topology(_Out):
    """Inbound adapters -> canonical topics -> routes -> delivery topics -> subscribers."""

    role: str = Field(description="The role this process runs: all, inbound, router or outbound.")
    inbound: list[InboundNode]
    routes: list[RouteNode]
    subscribers: list[SubscriberNode]


class ConfigIssueOut(_Out):
    file: str
    line: int | None
    field: str
    message: str


class ValidationReport(_Out):
    valid: bool
    errors: list[ConfigIssueOut]
    warnings: list[ConfigIssueOut]


class DeadLetterSummary(BaseModel):
    """One dead letter, as `bus dlq list --json` shows it (plus whatever its headers say of where it came from)."""

    model_config = ConfigDict(extra="allow")

    subscriber: str = Field(description="The outbound adapter, `_router`, or `_in.<inbound>`.")
    position: str = Field(description="partition/offset on its dead-letter topic.")
    event_id: str
    type: str
    key: str | None
    failed_at: str
    error_class: str
    attempts: str
    route: str
    error: str = Field(description="Why, secrets masked.")
    status: str = Field(description="new, replayed or purged.")


class DeadLetterPage(_Out):
    total: int = Field(description="Dead letters matching the filters.")
    offset: int
    limit: int
    items: list[DeadLetterSummary]
    counts: dict[str, int] = Field(default_factory=dict, description="Dead letters matching the filters, per subscriber.")


class DeadLetterAction(_Out):
    """Which dead letters to replay or purge: every filter given must hold."""

    subscriber: str | None = Field(default=None, description="One subscriber (default: every outbound, `_router`, `_in.*`).")
    ids: list[str] = Field(default_factory=list, description="Event ids or partition/offset positions.")
    since: str | None = Field(default=None, description="Failed at or after (RFC 3339).")
    until: str | None = Field(default=None, description="Failed before (RFC 3339).")
    error_class: str | None = None
    all: bool = Field(
        default=False, description="Match every dead letter when no other filter is given (a guard against replaying all by mistake)."
    )
    dry_run: bool = Field(default=False, description="Say how many would be affected; change nothing.")
    include_superseded: bool = Field(
        default=False,
        description="Replay also letters that a later event of the same key came after (replayed, they would put older data over newer).",
    )


class SupersededLetter(_Out):
    event_id: str
    position: str = Field(description="The letter's partition/offset on its dead-letter topic.")
    after: str = Field(description="The id of the later event of the same key that came after it.")


class UnsendableLetter(_Out):
    event_id: str
    position: str = Field(description="The letter's partition/offset on its dead-letter topic.")
    reason: str = Field(description="Why it cannot be replayed, and what to do instead.")


class DeadLetterDone(_Out):
    action: Literal["replay", "purge"]
    matched: int
    done: int = Field(
        description="How many were replayed or purged (0 on a dry run). A replay leaves out letters of which only a part "
        "was kept (too large for Kafka): send those again from their source."
    )
    dry_run: bool
    superseded: list[SupersededLetter] = Field(
        default_factory=list,
        description="Letters not replayed because a later event of the same key came after each (at most 100): replayed, "
        "they would put older data over newer. They stay open: replay them with include_superseded, or purge them.",
    )
    unsendable: list[UnsendableLetter] = Field(
        default_factory=list,
        description="Letters a replay cannot send at all, and why (at most 100): only a part was kept (too large for Kafka), "
        "or they name no topic to go back to. They stay open.",
    )


class RedeliveryRequest(_Out):
    """Which of what a subscriber was delivered to send it again (a target restored from a backup)."""

    since: str = Field(description="Reached the subscriber's delivery topic at or after (RFC 3339; without a zone, UTC).")
    until: str | None = Field(default=None, description="And before (RFC 3339; default: now).")
    keys: list[str] = Field(default_factory=list, description="Only the events of these keys (a customer's, an order's); default all.")
    dry_run: bool = Field(default=False, description="Say what would be sent; send nothing.")
    include_superseded: bool = Field(
        default=False,
        description="Send also events that a later event of the same key came after (sent again, they would put older data over newer).",
    )


class SupersededEvent(_Out):
    event_id: str
    position: str = Field(description="Its partition/offset on the subscriber's delivery topic.")
    after: str = Field(description="The id of the later event of the same key that came after it.")


class RedeliveryDone(_Out):
    subscriber: str
    since: str
    until: str | None
    keys: list[str] = Field(default_factory=list, description="Only these keys' events were looked at; empty: every key.")
    dry_run: bool
    matched: int = Field(description="Events of the window the subscriber has settled (delivered or dead-lettered).")
    to_send: int = Field(description="Of those, the ones sent again (or, on a dry run, that would be).")
    sent: int = Field(description="Copies written to the delivery topic (0 on a dry run); the hub delivers them as any event.")
    dead_lettered: int = Field(description="Left out: dead-lettered there; `bus dlq` replays or purges those.")
    superseded: int = Field(description="Left out: a later event of the same key came after (see include_superseded).")
    superseded_events: list[SupersededEvent] = Field(default_factory=list, description="The first 100 of them.")
    earlier_copies: int = Field(description="Left out: copies an earlier redelivery made of events sent again now.")
    kept_in_order: int = Field(
        description="Live events of a sent key that reached the topic ahead of its copy, sent again behind it (the newest stays last)."
    )
    not_settled: int = Field(description="Events of the window still on their way to the subscriber: they are not copied.")
    oldest_kept: str | None = Field(
        default=None, description="Set when Kafka no longer holds the start of the window (retention): the oldest time it holds."
    )
    paused: bool = Field(default=False, description="The subscriber is paused: the copies wait until it is resumed.")


class BackfillRequest(_Out):
    """Which events routed before a subscriber could receive them to give it now (a system that just joined)."""

    since: str = Field(description="Reached the canonical topics at or after (RFC 3339; without a zone, UTC).")
    until: str | None = Field(default=None, description="And before (RFC 3339; default: now).")
    keys: list[str] = Field(default_factory=list, description="Only the events of these keys (a customer's, an order's); default all.")
    dry_run: bool = Field(default=False, description="Say what would be written; write nothing.")
    include_superseded: bool = Field(
        default=False,
        description="Write also events of a key whose later event the subscriber was delivered (they would put older data over newer).",
    )


class FailedBackfill(_Out):
    event_id: str
    position: str = Field(description="The canonical record's topic/partition/offset.")
    route: str
    reason: str = Field(description="Why the route failed on it, as a live route's dead letter says it.")


class BackfillDone(_Out):
    subscriber: str
    since: str
    until: str | None
    keys: list[str] = Field(default_factory=list, description="Only these keys' records were looked at; empty: every key.")
    dry_run: bool
    routes: list[str] = Field(description="The subscriber's routes the records went through (as they are configured now).")
    left_out_routes: dict[str, str] = Field(
        default_factory=dict, description="The subscriber's routes a backfill cannot go through, and why."
    )
    read: int = Field(description="Canonical records of the window the router has routed.")
    not_routed: int = Field(description="Records of the window the router has not routed yet: it will, to every subscriber.")
    matched: int = Field(description="Events the routes give the subscriber for those records.")
    to_send: int = Field(description="Of those, the ones written (or, on a dry run, that would be).")
    sent: int = Field(description="Events written to the delivery topic (0 on a dry run); the hub delivers them as any event.")
    already_delivered: int = Field(description="Left out: the subscriber's delivery topic already holds the same event id.")
    superseded: int = Field(description="Left out: the subscriber was delivered a later event of the same key (see include_superseded).")
    superseded_events: list[SupersededEvent] = Field(default_factory=list, description="The first 100 of them.")
    failed: int = Field(description="A route failed on the record (a transform error): nothing written for it.")
    failed_events: list[FailedBackfill] = Field(default_factory=list, description="The first 100 of them, with why.")
    kept_in_order: int = Field(
        description="Live events of a written key that reached the topic ahead of its copy, written again behind it "
        "(the newest stays last)."
    )
    oldest_kept: str | None = Field(
        default=None, description="Set when Kafka no longer holds the start of the window (retention): the oldest time it holds."
    )
    paused: bool = Field(default=False, description="The subscriber is paused: the events wait until it is resumed.")


class ReconcileBalance(BaseModel):
    """A subscriber's ledger balance, as `bus reconcile --json` prints it."""

    model_config = ConfigDict(extra="allow")

    subscriber: str
    entered: int
    delivered: int
    dead_lettered: int
    in_flight: int
    unaccounted: list[str]
    balanced: bool
    ok: bool


class LineageAttempt(_Out):
    at: str = Field(description="When the attempt failed (RFC 3339).")
    answer: str = Field(description="What the target answered, or the error (secrets masked).")


class LineageEntered(_Out):
    at: str = Field(description="When the router read it (RFC 3339).")
    source: str = Field(description="CloudEvents source: the inbound adapter and its source reference.")
    type: str
    time: str = Field(description="The event's own time (when it entered the hub).")
    key: str | None
    subject: str | None
    position: str = Field(description="topic/partition/offset of the canonical event.")
    data: dict[str, object] | None = Field(default=None, description="The canonical event, secrets masked (null once Kafka dropped it).")


class LineageCopy(_Out):
    route: str
    to: str = Field(description="The subscriber, or `_router` for a copy the router dead-lettered.")
    element: str | None = Field(default=None, description="For a split element: its id suffix (the copy's id is `<id>/<element>`).")


class LineageDelivery(_Out):
    event_id: str = Field(description="The copy's id (a split element's id ends in `/<element>`).")
    subscriber: str
    at: str = Field(description="When it was settled (RFC 3339).")
    outcome: Literal["delivered", "dead_lettered"]
    attempts: int = Field(description="Calls made to the target.")
    failures: list[LineageAttempt] = Field(description="The failed attempts (the first and last few of a long run).")
    position: str = Field(description="topic/partition/offset of the copy on the delivery topic.")
    replayed_from: str | None = Field(
        default=None,
        description="Where this copy was sent again from: a dead letter (`bus dlq replay`), "
        "or an earlier copy on the delivery topic (`bus redeliver`).",
    )
    data: dict[str, object] | None = Field(default=None, description="What the route emitted for this subscriber, secrets masked.")


class LineageWhere(_Out):
    subscriber: str
    state: Literal["delivered", "dead_lettered", "replayed", "purged", "in_flight", "refused"] = Field(
        description="in_flight: routed, not settled yet (waiting, retrying, or paused); replayed: a dead letter sent back, "
        "not settled again yet; refused: dead-lettered at the edge (inbound) or by the router."
    )
    detail: str = ""


class EventLineage(_Out):
    """Where one event went: entered, routed, each delivery, dead letters and replays, and where it is now."""

    id: str
    entered: LineageEntered | None = Field(description="Null when the router never read it (refused at the edge, or not routed yet).")
    routed: list[LineageCopy]
    deliveries: list[LineageDelivery] = Field(description="Oldest first; a redelivery after a crash or a replay is another one.")
    dead_letters: list[DeadLetterSummary] = Field(description="Its dead letters on every dead-letter topic, with their status.")
    now: list[LineageWhere] = Field(description="Where it is now, per subscriber.")


class EventSearch(_Out):
    """Events found by a value: an event id, or a key or subject an inbound recorded."""

    value: str
    ids: list[str] = Field(description="Event ids: the value itself when it is one, then events with it as key or subject.")
    lineage_enabled: bool


class MigrationRun(_Out):
    """One run of ``bus migrate run``, as its journal has it (its checkpoint and counts move while it runs)."""

    id: str
    migration: str
    status: str = Field(description="running, interrupted (resumable), verifying, finished, rolling_back, rolled_back.")
    started: str
    finished: str | None
    ran_by: str
    rows_read: int = Field(description="Source rows done (the checkpoint).")
    counts: dict[str, int] = Field(description="read, written, unchanged, refused, failed, as of the last checkpoint.")
    report: str | None = Field(description="The reconciliation report's path in this API (HTML), once written.")


class MigrationRuns(_Out):
    """The migration runs in the state folder this hub can see (``$BUS_MIGRATE_STATE`` or ``.bus-migrate`` beside its config)."""

    state_folder: str
    runs: list[MigrationRun]
