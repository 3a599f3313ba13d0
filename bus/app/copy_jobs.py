"""The redeliveries and backfills being written, one per subscriber at a time across the hub.

Both write copies to a subscriber's delivery topic; two at the same moment (a console button
pressed twice, two operators, two replicas asked) would each write the same events, and the
target would get them twice. A second one is refused (``Busy``, an HTTP 409 naming what is under
way and where): at once when this process writes one already, and otherwise by a claim on the
control topic (bus.app.copy_claims) that every process and `bus redeliver -c` honour. Each job's
progress (a line per partition read and per 10,000 events written) is logged at INFO, carried in
its claim, and shown with the subscriber (``under_way``) by every process that follows the
control topic, so a long backfill asked through the API is not a silent wait.
"""

from __future__ import annotations

__all__ = ["ClaimsAt", "CopyJobs"]

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bus.app.copy_claims import EXPIRES_S, PREFIX, Claim, claim_copies, claim_of, holders
from bus.config.models import KafkaConfig
from bus.errors import Busy

log = logging.getLogger("bus.app.copy_jobs")


@dataclass(frozen=True)
class ClaimsAt:
    """Where the claims are: the hub's Kafka and its control topic."""

    kafka: KafkaConfig
    bootstrap: str
    topic: str


class CopyJobs:
    def __init__(self, claims_at: Callable[[], ClaimsAt | None] = lambda: None) -> None:
        self._jobs: dict[str, list[str]] = {}  # subscriber -> [what and when, its latest progress]
        self._claims_at = claims_at  # None: this process's own jobs only (no Kafka yet, or a test)
        self._seen: dict[str, Claim] = {}  # claim key -> the claim its latest record on the control topic holds
        self._released: set[str] = set()  # this process's claims released whose tombstone it has not read back yet

    def under_way(self, subscriber: str) -> str | None:
        """What is being written to ``subscriber`` now, with its progress (None: nothing): by this
        process, or by another one whose claim this process has seen."""
        job = self._jobs.get(subscriber)
        if job is not None:
            return f"{job[0]} ({job[1]})" if job[1] else job[0]
        live = holders(self._seen.values(), subscriber, time.time())
        return live[0].says() if live else None

    def seen(self, key: str, value: dict[str, Any] | None, offset: int) -> None:
        """A control record (bus.runtime.control): keeps the claims of copy jobs, wherever they run."""
        if not key.startswith(PREFIX):
            return
        claim = claim_of(key, value, offset)
        if claim is None:
            self._seen.pop(key, None)
            self._released.discard(key)
        elif key not in self._released:  # a renewal read after its job here ended is not shown as under way
            self._seen[key] = claim
        # A claim whose process died without releasing it lapses (holders() leaves it out), and is
        # forgotten here once it is long past that, so that the claims kept do not grow.
        forgotten = time.time() - 10 * EXPIRES_S
        for old in [k for k, c in self._seen.items() if c.renewed < forgotten]:
            del self._seen[old]

    @asynccontextmanager
    async def writing(self, subscriber: str, what: str) -> AsyncIterator[Callable[[str], None]]:
        """Hold ``subscriber`` for a ``what`` ("redelivery", "backfill") that writes; yields the
        job's progress callback. Raises ``Busy`` when one is under way already, here or in
        another process (bus.app.copy_claims; ``ClaimLost`` if this one's claim lapses)."""
        now = self._jobs.get(subscriber)
        if now is not None:
            raise Busy(f"{self.under_way(subscriber)} is under way in this process; ask again once it is done")
        job = [f"a {what} to {subscriber} asked at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}", ""]
        self._jobs[subscriber] = job
        try:
            at = self._claims_at()
            if at is None:
                yield lambda line: self._progressed(job, line, None)
                return
            async with claim_copies(at.kafka, at.bootstrap, at.topic, subscriber, job[0]) as holding:
                try:
                    yield lambda line: self._progressed(job, line, holding.progressed)
                finally:
                    self._released.add(holding.key)
                    self._seen.pop(holding.key, None)
        finally:
            del self._jobs[subscriber]

    @staticmethod
    def _progressed(job: list[str], line: str, claimed: Callable[[str], None] | None) -> None:
        job[1] = line
        if claimed is not None:
            claimed(line)
        log.info("%s: %s", job[0], line)

    @staticmethod
    def looking(subscriber: str, what: str) -> Callable[[str], None]:
        """The progress callback of a dry run (it writes nothing, so it holds nothing)."""
        return lambda line: log.info("a dry run of a %s to %s: %s", what, subscriber, line)
