"""Logging set-up: plain text for a terminal, one JSON object per line for a log pipeline, and
secrets never written either way.

Redaction has two layers. Every secret the loaded config holds (each ``SecretStr`` value) is
remembered and replaced wherever it appears in a message, whatever the message's shape. Beside
that, patterns catch the usual carriers of credentials that a config never saw (a password in a
URL, an ``Authorization`` header, ``token=...`` in a query string), e.g. in a driver's exception.

Levels follow one rule (docs/operations.md): normal operation logs at INFO only on start, stop
and state changes; each failure is one WARNING line; per-event detail is DEBUG.
"""

from __future__ import annotations

__all__ = [
    "EVENT_TRACE",
    "REDACTOR",
    "JsonFormatter",
    "Redactor",
    "RepeatedWarning",
    "TextFormatter",
    "about_event",
    "configure_logging",
    "secrets_in",
]

import asyncio
import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, SecretStr

MASK = "***"
_PATTERNS = (
    re.compile(r"(?P<keep>://)[^/\s@'\"]+(?=@)"),  # scheme://USERINFO@host: user and password alike
    re.compile(r"(?P<keep>://[^\s'\"]*?[?&][^=&#\s'\"]+=)[^&#\s'\"]+"),  # a URL's query values (a token in ?sig=...)
    re.compile(r"(?P<keep>\b(?:authorization|proxy-authorization)['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|token)?\s*)[^\s'\",}]+", re.I),
    re.compile(
        r"(?P<keep>\b(?:password|passwd|pwd|secret|client_secret|api[_-]?key|access[_-]?token|refresh[_-]?token|token)"
        r"['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,}]+",
        re.I,
    ),
)
_QUERY_VALUE = re.compile(r"(?P<keep>[?&][^=&#\s'\"/]+=)(?!\*\*\*)[^&#\s'\"]+")  # every further value of a query
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def secrets_in(value: Any) -> Iterator[str]:
    """Every SecretStr value inside a config object (models, lists, dicts), for the redactor."""
    if isinstance(value, SecretStr):
        if secret := value.get_secret_value():
            yield secret
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secrets_in(item)


class Redactor(logging.Filter):
    """Masks known secrets and credential-shaped text in the formatted message and exception."""

    def __init__(self) -> None:
        super().__init__()
        self._known: list[str] = []

    def remember(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole. Very short values
        # (under 4 characters) would mask ordinary words; they are too weak to be worth hiding.
        # A secret placed in a URL travels percent-encoded: that form is masked too.
        values = {s for s in (*self._known, *secrets) if len(s) >= 4}
        values |= {quote(s, safe="") for s in values}
        self._known = sorted(values, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group("keep") + MASK, text)
        return _QUERY_VALUE.sub(lambda m: m.group("keep") + MASK, text) if "://" in text else text

    def redact_tree(self, value: Any) -> Any:
        """Every string inside ``value`` (dicts, lists) redacted: for answers that leave the hub."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_tree(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


# The W3C traceparent of the event the current task is handling (a delivery, a span): every log
# line written meanwhile carries its trace_id and span_id, so a log search finds the trace.
EVENT_TRACE: ContextVar[str | None] = ContextVar("bus_event_trace", default=None)


@contextlib.contextmanager
def about_event(traceparent: str | None) -> Iterator[None]:
    """Log lines inside are about the event with this traceparent."""
    token = EVENT_TRACE.set(traceparent)
    try:
        yield
    finally:
        EVENT_TRACE.reset(token)


class RepeatedWarning:
    """A WARNING that may come once per message (one refused, one parked), said at most once per
    ``every_s``: the first at once, the ones after it within the interval as one line when it
    ends (how many, and the latest's words). A flood of bad messages cannot flood the log, and
    none goes unsaid."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._logger, self._every_s = logger, every_s
        self._quiet_until = 0.0
        self._held = 0
        self._latest = ""

    def warn(self, text: str) -> None:
        if time.monotonic() >= self._quiet_until:
            self._logger.warning("%s", text)
            self._quiet(asyncio.get_running_loop())
        else:
            self._held += 1
            self._latest = text

    def _quiet(self, loop: asyncio.AbstractEventLoop) -> None:
        self._quiet_until = time.monotonic() + self._every_s
        loop.call_later(self._every_s, self._interval_ended, loop)

    def _interval_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._held:
            return  # quiet: the next one is said at once
        held, self._held = self._held, 0
        self._logger.warning("%s (%d like it in the last %gs; the latest said here)", self._latest, held, self._every_s)
        self._quiet(loop)


# Control characters as escapes: C0 but the tab, DEL, C1 (a terminal's escape sequences), and
# Unicode's line and paragraph separators.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160)) if c != 9} | {
    10: "\\n",
    13: "\\r",
    0x2028: "\\u2028",  # line and paragraph separators: line breaks to some log viewers
    0x2029: "\\u2029",
}


class TextFormatter(logging.Formatter):
    """One line per message: control characters in a message (a line break or a terminal escape
    in a sender's value quoted by a reason) are written as escapes, so no one can forge a log
    line or drive an operator's terminal. A traceback after the message keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line if line.isprintable() else line.translate(_CONTROLS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's trace_id and span_id
    when the line is about an event, anything passed in ``extra=``, and the exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        traceparent = EVENT_TRACE.get()
        if traceparent and len(traceparent) == 55:  # 00-<trace id>-<span id>-<flags>
            entry["trace_id"], entry["span_id"] = traceparent[3:35], traceparent[36:52]
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


REDACTOR = Redactor()


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> Redactor:
    """Set up the root logger once for a process; returns the redactor to tell about secrets."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(REDACTOR)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return REDACTOR
