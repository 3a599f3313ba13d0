"""How long a token endpoint's access token lives, from its ``expires_in`` (RFC 6749 5.1).

Providers send a number of seconds, some as a string ("3599"), some not at all. What no clock
can use (text, a list, NaN, infinity, a number past what a float holds) is taken as not sent:
the default lifetime, with the token fetched again early if the target refuses it. It broke the
fetch before (a ValueError, logged as an adapter bug on every delivery). A lifetime is kept
between ``SHORTEST_S`` (a token said to be already expired is not fetched for every call of a burst)
and ``LONGEST_S``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_S", "LONGEST_S", "SHORTEST_S", "lifetime"]

import math

DEFAULT_S = 3600.0
SHORTEST_S = 1.0
LONGEST_S = 366 * 86400.0


def lifetime(expires_in: object) -> float:
    """Seconds the token may be used, from the answer's ``expires_in`` (any JSON value, or None)."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return DEFAULT_S
    try:
        seconds = float(expires_in)
    except (ValueError, OverflowError):
        return DEFAULT_S
    if not math.isfinite(seconds):
        return DEFAULT_S
    return min(max(seconds, SHORTEST_S), LONGEST_S)
