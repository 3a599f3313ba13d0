"""Rows of a CSV or JSON Lines file, read as it streams, and handed to Kafka: what the ``file``
inbound (a local drop folder) and the ``sftp`` inbound (a remote one, each file fetched first)
share. A row that cannot become an event, or is not text in the file's encoding, is kept on the
inbound dead-letter topic with its line number; at most ``IN_FLIGHT`` rows await Kafka's
acknowledgement at once, so memory stays flat whatever the file's size."""

from __future__ import annotations

__all__ = ["BATCH", "IN_FLIGHT", "Unreadable", "format_of", "next_rows", "publish_rows", "rows"]

import asyncio
import collections
import itertools
import re
from collections.abc import Awaitable, Iterator
from typing import Any, TextIO

from bus.adapter_api import (
    EventSink,
    Intake,
    LineTooLong,
    bounded_lines,
    csv_header_problem,
    csv_records,
    parse_json,
    undecodable,
)

BATCH = 1000  # rows read and parsed (off the event loop) at a time
IN_FLIGHT = 10_000  # rows handed to Kafka and not yet acknowledged, at most
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes the encoding could not decode, kept by "surrogateescape"


def format_of(name: str, configured: str) -> str:
    """csv or jsonl: the configured format, or with ``auto`` the file name's suffix (.jsonl, .ndjson)."""
    if configured != "auto":
        return configured
    return "jsonl" if name.lower().endswith((".jsonl", ".ndjson")) else "csv"


class Unreadable(Exception):
    """The file as a whole cannot be read as the configured format."""


def rows(handle: TextIO, kind: str, delimiter: str, encoding: str) -> Iterator[tuple[int, Any, bytes]]:
    """(line number, document or a ValueError, raw bytes) for each row, read as the file streams."""

    def raw(text: str) -> bytes:
        return text.encode(encoding, "surrogateescape")  # the row's bytes as they are in the file

    def not_text(number: int) -> ValueError:
        return ValueError(f"line {number}: not {encoding} text; if the whole file is in another encoding, set encoding (e.g. latin-1)")

    # In UTF-16 or UTF-32 a broken character (a file cut at an odd byte) cannot be kept for its line
    # alone: the reader stopped there with a UnicodeDecodeError after the rows before it were on
    # Kafka, and the file went to failed/ half imported. Checked whole, before any row.
    if why := undecodable(handle, encoding):
        raise Unreadable(f"{why}; no row was read")

    if kind == "jsonl":
        for number, read in enumerate(bounded_lines(handle), start=1):
            if isinstance(read, LineTooLong):
                yield number, ValueError(f"line {number}: {read}; the line is skipped"), raw(read.head + "...")
                continue
            line = read.rstrip("\r\n")
            if not line.strip():
                continue
            if _UNDECODED.search(line):
                yield number, not_text(number), raw(line)
                continue
            try:
                yield number, parse_json(line), raw(line)
            except ValueError as exc:
                yield number, ValueError(f"line {number}: invalid JSON: {exc}"), raw(line)
        return
    records = csv_records(handle, delimiter)
    header = next(records, None)
    if header is None or not header.values:
        raise Unreadable(f"the CSV header cannot be read: {header.error}" if header is not None else "no CSV header row")
    if _UNDECODED.search("".join(header.values)):
        raise Unreadable(f"the CSV header is not {encoding} text; set encoding (e.g. latin-1)")
    problem = csv_header_problem(header.values, delimiter)
    if problem:
        raise Unreadable(problem)
    names, width = header.values, len(header.values)
    for record in records:
        number, values = record.line, record.values
        if values is None:  # this record only; the reader goes on after it
            yield number, ValueError(f"line {number}: {record.error}"), raw(record.text)
        elif _UNDECODED.search(record.text):
            yield number, not_text(number), raw(record.text)
        elif len(values) > width:  # an unquoted separator shifted the rest
            yield number, ValueError(f"line {number}: {len(values) - width} field(s) beyond the header"), raw(record.text)
        elif len(values) < width:  # not read as nulls: the record was cut short
            yield number, ValueError(f"line {number}: {width - len(values)} field(s) fewer than the header names"), raw(record.text)
        else:
            yield number, dict(zip(names, values, strict=True)), raw(record.text)


def next_rows(found: Iterator[tuple[int, Any, bytes]]) -> list[tuple[int, Any, bytes]]:
    return list(itertools.islice(found, BATCH))


async def publish_rows(
    intake: Intake, sink: EventSink, handle: TextIO, *, origin: str, checksum: str, kind: str, encoding: str, delimiter: str
) -> dict[str, int]:
    """Every row of ``handle`` to Kafka, in file order, each acknowledged before this returns; the
    counts (rows, accepted, rejected). ``origin`` names the file in dead letters (``file:NAME``).
    Unreadable: the file as a whole, before any row. KafkaUnavailable propagates: the caller leaves
    the file to be read again (rows keep their ids: the digest's first 16 characters and the line)."""
    acks: collections.deque[Awaitable[None]] = collections.deque()
    parked_before, count, rejected = intake.parked, 0, 0
    found = rows(handle, kind, delimiter, encoding)
    batch = await asyncio.to_thread(next_rows, found)
    while batch:
        for line, document, raw in batch:
            count += 1
            headers = {"bus_origin": f"{origin}:{line}", "file_sha256": checksum, "file_line": str(line)}
            if isinstance(document, ValueError):
                await sink.reject(raw, str(document), headers=headers)
                rejected += 1
                continue
            acks.append(await intake.submit_document(document, raw=raw, event_id=f"{checksum[:16]}:{line}", origin=headers))
            while len(acks) > IN_FLIGHT:
                await acks.popleft()
        batch = await asyncio.to_thread(next_rows, found)
    for ack in acks:
        await ack
    rejected += intake.parked - parked_before  # rows refused while mapping
    return {"rows": count, "accepted": count - rejected, "rejected": rejected}
