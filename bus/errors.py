"""The hub's exception tree. Every error is either retryable or permanent.

    BusError
     ├── ConfigError          a config file is wrong; names file, line and field. Exit code 2.
     ├── StartupError         the config is valid but the hub cannot start as it says (a port in use).
     ├── RetryableError       a dependency is unavailable for now; back off and try again.
     │    └── KafkaUnavailable   Kafka did not acknowledge in time (webhooks answer 503).
     └── PermanentError       the same input will fail the same way; dead-letter or reject it.
          ├── EventRejected      bad input at the edge (mapping, schema validation); a 400.
          └── ExpressionError    an expression failed to parse or to evaluate.

Retryable errors may carry ``retry_after`` (seconds) when the other side said how long to wait.

Messages of errors about input are cut to ``MAX_MESSAGE`` characters (``brief``): they travel to
the sender (a 400), into dead-letter headers and logs, and a reason must never echo a sender's
18 MB value back.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "ConfigError",
    "ConfigIssue",
    "EventRejected",
    "ExpressionError",
    "KafkaUnavailable",
    "PermanentError",
    "RetryableError",
    "StartupError",
    "brief",
]

from dataclasses import dataclass

MAX_MESSAGE = 1000


def brief(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class BusError(Exception):
    """Root of every error the hub raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One thing wrong in a config: where (file, line, dotted field) and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '<top level>'}: {self.message}"


class ConfigError(BusError):
    """The configuration is invalid. Carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"invalid configuration ({len(issues)} error(s)):\n{lines}")


class StartupError(BusError):
    """The hub cannot start as configured: one line naming the config field, its value and what
    to do (a port in use, an address no interface has). Exit code 1."""


class Busy(BusError):
    """Another process is doing the same thing right now (a redelivery or backfill of the same
    subscriber): refused at once with who to wait for, rather than done twice (HTTP 409)."""


class ClaimLost(BusError):
    """A redelivery or backfill could not renew its claim on the subscriber (bus.app.copy_claims)
    for long enough that another process may take the subscriber over, and stopped writing so as
    not to write the same copies beside it (HTTP 503). What it wrote stays; asked again, the job
    leaves out what is delivered."""


class ComponentHalted(BusError):
    """A component stopped itself for a condition outside the hub that it cannot ride out in place
    (Kafka's group coordinator out of reach): the supervisor says so at WARNING, without the
    traceback a bug gets, and starts it again."""


class RetryableError(BusError):
    """Temporary failure: the runtime backs off and tries again."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(brief(message))
        self.retry_after = retry_after


class TargetNotReady(RetryableError):
    """The target is not set up for this config (a table, a column or a privilege missing). Live
    delivery retries it (every event would fail alike until someone fixes the target, and then every
    one should go through); a migration stops at once (someone is there to fix it and resume)."""


class KafkaUnavailable(RetryableError):
    """Kafka could not acknowledge a produce in time."""


class PermanentError(BusError):
    """Trying again cannot help: reject the input or dead-letter the event."""

    def __init__(self, message: str = "") -> None:
        super().__init__(brief(message))


class EventRejected(PermanentError):
    """Input refused at the edge where it came in; the message says which field and why."""


class EventTooLarge(EventRejected):
    """The event, as a Kafka record, is larger than the hub takes (``MAX_EVENT_BYTES``, under Kafka's
    1 MiB) or than the broker took: no retry can store it (a 413, a dead letter)."""


class ExpressionError(PermanentError, ValueError):
    """An expression could not be parsed (with position) or evaluated.

    Also a ValueError, so pydantic reports it as a field error when a config is validated.
    """

    def __init__(self, message: str, *, expression: str = "", position: int | None = None) -> None:
        self.expression = expression
        self.position = position
        self.reason = message
        if position is not None and expression:
            message = f"{message} at position {position + 1}: {expression!r}"
        super().__init__(brief(message))
