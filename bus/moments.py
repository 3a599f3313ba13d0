"""Times read from text or numbers anyone may have written: a CloudEvent's `time`, a `ce_time` header
another producer set, a Kafka record's timestamp, a time an operator typed.

``datetime.fromisoformat`` alone is too willing for a sender's time (a date alone, no zone, week
dates) and too brittle for a record's (a time past the year 9999 once in UTC raises, one without a
zone is read in the reader's local zone); ``datetime.fromtimestamp`` raises OSError or
OverflowError past the calendar. Each of those once stopped a reconcile or came out of a mapping.
These answer None instead."""

from __future__ import annotations

__all__ = ["epoch_ms_moment", "in_utc", "moment_of", "rfc3339_moment"]

import re
from datetime import UTC, datetime

# RFC 3339's date-time (section 5.6): a full date, "T" (or a space, or "t"), a time of day with
# seconds, a fraction if any, and a zone; CloudEvents' `time` must be one.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def in_utc(moment: datetime) -> datetime:
    """A time given without a zone is UTC (the hub's logs and records are)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def rfc3339_moment(text: str) -> datetime | None:
    """``text`` as a time in UTC if it is an RFC 3339 timestamp that names a real moment, else None.
    ISO 8601 readers take much more (a date alone, no zone, week dates, "20261201T1000"): a time
    without a zone is read as local time by whoever reads it next."""
    if len(text) > 64 or not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):  # a 13th month; a moment past year 9999 once in UTC
        return None


def moment_of(text: str) -> datetime | None:
    """A time written in a record the hub may not have written (``ce_time`` from any producer), in
    UTC: any ISO 8601 form Python reads, a time without a zone taken as UTC; None when it is none or
    lies outside the years 1 to 9999 in UTC."""
    try:
        return in_utc(datetime.fromisoformat(text)).astimezone(UTC)
    except (ValueError, OverflowError, TypeError):
        return None


def epoch_ms_moment(ms: float) -> datetime | None:
    """Milliseconds since the epoch (a Kafka record's timestamp, which its producer sets) as a time
    in UTC; None past the years 1 to 9999."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
