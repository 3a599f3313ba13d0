"""Checksums of content, after a load (and again whenever asked: ``bus migrate verify RUN``).

For each subscriber, every record the run meant to leave (journal entries written, unchanged or
pending) is read back through the target's adapter and compared, field by field in canonical form
(bus/migrate/canonical.py), with what the run meant. Two checksums per subscriber, each sha256 of
the sorted ``key<TAB>digest`` lines: the *source* one over what was meant, the *target* one over
what is there. They are equal exactly when every record holds what it should; each record that
does not is named with its differing fields. A target that cannot be read is declared
unverifiable (its source checksum is still given).
"""

from __future__ import annotations

__all__ = ["SubscriberCheck", "verify_run"]

from dataclasses import dataclass, field
from typing import Any

from bus.errors import PermanentError
from bus.migrate.canonical import ChecksumLines, aligned, differing_fields, digest, from_typed_json
from bus.migrate.journal import Entry, Journal
from bus.migrate.targets import Targets

MAX_LISTED = 1000  # differences named in the report per subscriber (all are counted)


@dataclass
class SubscriberCheck:
    subscriber: str
    verifiable: bool
    records: int = 0  # records the run meant to leave
    matching: int = 0
    source_checksum: str = ""
    target_checksum: str | None = None  # None: unverifiable
    differences: list[dict[str, Any]] = field(default_factory=list)
    different: int = 0
    missing: int = 0  # expected present, absent
    batches: list[dict[str, Any]] = field(default_factory=list)  # per batch of source rows: both checksums

    @property
    def ok(self) -> bool:
        return self.verifiable and self.different == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "subscriber": self.subscriber,
            "verifiable": self.verifiable,
            "records": self.records,
            "matching": self.matching if self.verifiable else None,
            "different": self.different,
            "missing": self.missing,
            "source_checksum": self.source_checksum,
            "target_checksum": self.target_checksum,
            "checksums_equal": self.verifiable and self.source_checksum == self.target_checksum,
            "differences": self.differences,
            "batches": self.batches,
            "batches_differing": [b["batch"] for b in self.batches if b["target_checksum"] not in (None, b["source_checksum"])],
        }


@dataclass
class _BatchSums:
    """One batch of source rows' checksums, what was meant and what is held, taken as its entries come."""

    meant: ChecksumLines = field(default_factory=ChecksumLines)
    held: ChecksumLines = field(default_factory=ChecksumLines)
    records: int = 0


async def verify_run(journal: Journal, run_id: str, targets: Targets) -> dict[str, SubscriberCheck]:
    checks: dict[str, SubscriberCheck] = {}
    for target in targets:
        check = checks[target.name] = SubscriberCheck(target.name, target.verifiable)
        # The journal hands the entries over in key order, so both checksums (and each batch's) are
        # taken as they come: nothing is kept per record, whatever the run's size.
        source, held = ChecksumLines(), ChecksumLines()
        batches: dict[int, _BatchSums] = {}
        # A SQL target reads back exactly the fields meant, so a record that holds what it should has
        # the digest meant as it is: no need to parse what was meant. A target that answers with more
        # fields than meant (an HTTP service's own) never does, and stops being tried that way.
        whole_first = True
        for chunk in journal.entries(run_id, target.name, ("written", "unchanged", "pending")):
            check.records += len(chunk)
            actual: list[Any] = [None] * len(chunk)
            if target.verifiable:
                actual = await target.read_each([from_typed_json(e.address) for e in chunk])
            for entry, now in zip(chunk, actual, strict=True):
                meant = entry.digest or ""
                found = _compare(check, entry, now, whole_first) if target.verifiable else ""
                if found is None:  # the target answers with fields of its own
                    whole_first = False
                    found = _compare(check, entry, now, False)
                source.add(entry.key, meant)
                held.add(entry.key, found or "")
                batch = batches.get(entry.batch or 0)
                if batch is None:
                    batch = batches[entry.batch or 0] = _BatchSums()
                batch.meant.add(entry.key, meant)
                batch.held.add(entry.key, found or "")
                batch.records += 1
        check.source_checksum = source.hexdigest()
        if target.verifiable:
            check.target_checksum = held.hexdigest()
        check.batches = [
            {
                "batch": number,
                "records": sums.records,
                "source_checksum": sums.meant.hexdigest(),
                "target_checksum": sums.held.hexdigest() if target.verifiable else None,
            }
            for number, sums in sorted(batches.items())
        ]
    return checks


def _compare(check: SubscriberCheck, entry: Entry, now: Any, whole_first: bool) -> str | None:
    """The digest of what the target holds of ``entry`` (counted in ``check`` as matching or not,
    a difference listed with its fields); None when ``whole_first`` was tried on a target that
    answers with more fields than meant (compare again without it)."""
    if isinstance(now, PermanentError):  # this record cannot be read back: a difference, with the reason
        check.different += 1
        if len(check.differences) < MAX_LISTED:
            check.differences.append({"key": entry.key, "fields": {"(read)": {"expected": "readable", "actual": str(now)}}})
        return "unreadable"
    if whole_first and now is not None and digest(now) == entry.digest:
        check.matching += 1
        return entry.digest
    expected = from_typed_json(entry.expected) if entry.expected is not None else None
    if whole_first and expected is not None and now is not None and len(now) > len(expected):
        return None
    if expected is not None and now is not None:
        now = aligned(expected, now)  # a time or a number the target keeps in its own layout, as what it names
    shown = now if expected is None or now is None else {name: now.get(name) for name in expected}
    held = digest(shown)
    if held == entry.digest:  # equal: no field by field comparison needed
        check.matching += 1
        return held
    diff = differing_fields(expected, now)
    if not diff:
        check.matching += 1
        return held
    check.different += 1
    if expected is not None and now is None:
        check.missing += 1
    if len(check.differences) < MAX_LISTED:
        fields = {name: {"expected": want, "actual": got} for name, (want, got) in diff.items()}
        check.differences.append({"key": entry.key, "fields": fields})
    return held
