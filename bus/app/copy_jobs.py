"""The redeliveries and backfills one hub process is writing, one per subscriber at a time.

Both write copies to a subscriber's delivery topic; two at the same moment (a console button
pressed twice, two operators) would each write the same events, and the target would get them
twice. A second one asked of the same process while the first writes is refused (``Busy``, an
HTTP 409 naming what is under way). Each job's progress (a line per partition read and per
10,000 events written) is logged at INFO and shown with the subscriber (``under_way``), so a long
backfill asked through the API is not a silent wait. Processes do not see each other's jobs.
"""

from __future__ import annotations

__all__ = ["CopyJobs"]

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from bus.errors import Busy

log = logging.getLogger("bus.app.copy_jobs")


class CopyJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, list[str]] = {}  # subscriber -> [what and when, its latest progress]

    def under_way(self, subscriber: str) -> str | None:
        """What this process is writing to ``subscriber`` now, with its progress (None: nothing)."""
        job = self._jobs.get(subscriber)
        if job is None:
            return None
        return f"{job[0]} ({job[1]})" if job[1] else job[0]

    @contextmanager
    def writing(self, subscriber: str, what: str) -> Iterator[Callable[[str], None]]:
        """Hold ``subscriber`` for a ``what`` ("redelivery", "backfill") that writes; yields the
        job's progress callback. Raises ``Busy`` when one is under way already."""
        now = self.under_way(subscriber)
        if now is not None:
            raise Busy(f"{now} is under way in this process; ask again once it is done")
        job = [f"a {what} to {subscriber} asked at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}", ""]
        self._jobs[subscriber] = job

        def progressed(line: str) -> None:
            job[1] = line
            log.info("%s: %s", job[0], line)

        try:
            yield progressed
        finally:
            del self._jobs[subscriber]

    @staticmethod
    def looking(subscriber: str, what: str) -> Callable[[str], None]:
        """The progress callback of a dry run (it writes nothing, so it holds nothing)."""
        return lambda line: log.info("a dry run of a %s to %s: %s", what, subscriber, line)
