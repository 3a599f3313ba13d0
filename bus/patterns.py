"""Regular expressions run on values that come from outside the hub, in time linear in the value.

``matches()`` in a route's condition or a mapping, and the ``pattern`` of an OpenAPI contract a
webhook checks its bodies against, test text that a sender chose. Python's ``re`` backtracks: a
pattern as common as an e-mail check copied from the web takes minutes, or hours, on thirty
crafted characters (``(x+x+)+y`` on 28 ``x``: about 30 s), holding the event loop and with it
every flow of the process; restarted, the router reads the same event again. RE2 (Go's and
Rust's engine, the one Redpanda Connect's mappings use) never backtracks: its time grows with the
value, whatever the pattern. Its syntax is Perl's without lookaround and backreferences, which
are what cannot be run in linear time; ``\\d``, ``\\w`` and ``\\b`` are ASCII.
"""

from __future__ import annotations

__all__ = ["PatternError", "compiled", "search"]

from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason goes into the PatternError, not to stderr
_COMPILED: dict[str, Any] = {}
_MOST = 4096  # patterns kept compiled (a pattern can come from the data); cleared when full


class PatternError(ValueError):
    """A pattern RE2 cannot run: the reason, and what RE2 does not support."""


def compiled(pattern: str) -> Any:
    """``pattern`` compiled once (an RE2 regexp with ``search``); PatternError when it is not one."""
    found = _COMPILED.get(pattern)
    if found is None:
        try:
            found = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            hint = (
                "; for a negative lookahead, match what must not be there and negate: not matches(...)"
                if "(?!" in pattern or "(?<!" in pattern
                else ""
            )
            raise PatternError(
                f"{pattern!r} is not a pattern the hub runs ({reason}): RE2 syntax, as in Go and Rust, without lookaround "
                f"or backreferences (they can take exponential time on one value){hint}"
            ) from None
        if len(_COMPILED) >= _MOST:
            _COMPILED.clear()
        _COMPILED[pattern] = found
    return found


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text``."""
    return compiled(pattern).search(text) is not None
