"""A run's progress, told three ways: a bar on a terminal (rows read, written, unchanged, refused,
failed, rate, ETA), a log line every 10 s when the output is not a terminal (a Kubernetes job),
and Prometheus counters (``bus_migration_rows_total``; served with ``--metrics-port``). The
journal's checkpoint after each batch is what the management API reads."""

from __future__ import annotations

__all__ = ["Progress"]

import logging
import sys
import time
from typing import TextIO

from bus.metrics import MIGRATION_ROWS, MIGRATION_ROWS_EXPECTED

log = logging.getLogger("bus.migrate")
OUTCOMES = ("read", "written", "unchanged", "refused", "failed")


class Progress:
    def __init__(self, migration: str, total: int | None, *, stream: TextIO | None = None, phase: str = "run") -> None:
        self.migration = migration
        self.total = total
        self.phase = phase
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._shown = 0.0
        self._metrics = {o: MIGRATION_ROWS.labels(migration, o) for o in OUTCOMES}
        MIGRATION_ROWS_EXPECTED.labels(migration).set(total or 0)

    def add(self, outcome: str, n: int = 1) -> None:
        if n:
            self.counts[outcome] += n
            self._metrics[outcome].inc(n)

    def line(self) -> str:
        c = self.counts
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = c["read"] / elapsed
        done = f"{c['read']:,}" + (f"/{self.total:,}" if self.total else "")
        text = (
            f"{self.migration} {self.phase}: {done} rows read, {c['written']:,} written, {c['unchanged']:,} unchanged, "
            f"{c['refused']:,} refused, {c['failed']:,} failed, {rate:,.0f} rows/s"
        )
        if self.total and rate > 0 and c["read"] < self.total:
            text += f", ETA {_clock((self.total - c['read']) / rate)}"
        return text

    def bar(self) -> str:
        if not self.total:
            return self.line()
        share = min(1.0, self.counts["read"] / self.total)
        filled = int(share * 24)
        return f"[{'#' * filled}{'.' * (24 - filled)}] {share:4.0%} {self.line()}"

    def show(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            if final or now - self._shown >= 0.2:
                self._shown = now
                self._stream.write("\r\033[K" + self.bar() + ("\n" if final else ""))
                self._stream.flush()
        elif final or now - self._shown >= 10:
            self._shown = now
            log.info("%s", self.line())


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"
