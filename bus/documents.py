"""Bytes from a sender into documents, with limits a hostile sender cannot get past.

Every inbound reads JSON (and the webhook also XML) through these functions, so one rule holds
everywhere: a body that does not parse, or is nested deeper than ``MAX_DEPTH``, is a
``ValueError`` with a reason, never a ``RecursionError`` or a stalled event loop. The reason is
what the sender (a 400) or the dead letter (``bus_error``) says.

Cost on the hot path: ``json.loads`` plus two ``bytes.count`` calls; the depth walk runs only for
a body with more than ``MAX_DEPTH`` opening brackets.
"""

from __future__ import annotations

__all__ = [
    "CSV_MAX_FIELD",
    "MAX_DEPTH",
    "MAX_DOCUMENT_FILE_BYTES",
    "MAX_LINE_CHARS",
    "MAX_SCHEMA_FILE_BYTES",
    "CsvRecord",
    "FileTooLarge",
    "LineTooLong",
    "allow_large_csv_fields",
    "ascii_compatible",
    "bounded_lines",
    "csv_header_problem",
    "csv_records",
    "first_path",
    "known_text_encoding",
    "parse_json",
    "parse_xml",
    "read_at_most",
    "text_codec",
    "undecodable",
]

import codecs
import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO
from xml.parsers import expat

import xmltodict

# Deeper than any real payload (Jackson's default limit is 1,000, most APIs stay under 20), and
# far below what Python's recursion limit lets the parser and everything after it handle.
MAX_DEPTH = 256


def _too_deep(document: Any, limit: int) -> bool:
    """True when ``document`` nests objects and arrays more than ``limit`` deep (iterative)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def first_path(value: Any, bad: Callable[[Any], bool], path: str = "") -> str | None:
    """The path (``lines[2].sku``) of the first leaf of a document for which ``bad`` holds, or None:
    to name the field an encoder refused, asked only once it has."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return path if bad(value) else None
    for name, item in items:
        found = first_path(item, bad, f"{path}[{name}]" if isinstance(name, int) else f"{path}.{name}" if path else str(name))
        if found is not None:
            return found
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity; send null or a number)")


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"the number {shown} is beyond what a double holds (about 1.8e308)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 60 else key[:60] + "..."
                raise ValueError(f"the key {shown!r} is given twice in one object: which of its values counts is not said")
            seen.add(key)
    return document


# Python's parser takes NaN, Infinity and -Infinity, which JSON does not have (RFC 8259): taken, a
# NaN went on to every target as the bare word NaN, which their JSON parsers refuse. And it reads a
# number beyond a double's range (1e400) as infinity: the event took it, and each target refused
# it later (JSON has no infinity) or stored "Infinity" (a PostgreSQL double). A key given twice in
# an object (RFC 8259: names SHOULD be unique) was read as its last value, where a signature
# checker, a gateway or the sender's own log may have read the first: refused. Made once.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys)
# For answers from systems the config names (a target's answer, a polled API's page, a token
# endpoint's): a key given twice is read as its last value, as those systems' other clients read
# it. Refused, one such key in a polled page held the whole source at every poll, and one in a
# target's 200 had a delivery the target took sent again until it was dead-lettered.
_LAST_WINS = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def parse_json(data: bytes | str, *, max_depth: int = MAX_DEPTH, repeated_keys: Literal["refuse", "last"] = "refuse") -> Any:
    """The document in ``data``; ``ValueError`` (with the reason) when it is not JSON or too deep.
    ``repeated_keys="last"`` reads a key given twice in an object as its last value: for what a
    configured system answers, not for what a sender sends in."""
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes | bytearray) else data
        document = (_DECODER if repeated_keys == "refuse" else _LAST_WINS).decode(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's own limit; its advice is for Python programmers
            raise ValueError(f"a number has more than {sys.get_int_max_str_digits():,} digits") from None
        raise
    # UnicodeDecodeError and json's JSONDecodeError are ValueErrors: they pass through as they are.
    openers = data.count(b"[") + data.count(b"{") if isinstance(data, bytes) else data.count("[") + data.count("{")
    if openers > max_depth and _too_deep(document, max_depth):
        raise ValueError(f"JSON nested more than {max_depth} levels deep")
    return document


def _check_xml_depth(body: bytes, max_depth: int) -> None:
    """Walk the elements once with expat (no tree built) and stop at the first one too deep."""
    depth = 0

    def start(_name: str, _attrs: Any) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise ValueError(f"XML nested more than {max_depth} elements deep")

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    def no_entities(*_args: Any) -> None:
        raise ValueError("XML entities are not accepted")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = no_entities  # XXE and entity-expansion bombs
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise ValueError(str(exc)) from exc
    except LookupError as exc:  # the declaration names an encoding Python has not ("ISO-885z-1", "rot13")
        raise ValueError(f"the XML declares an encoding this hub cannot read: {exc}") from None


def parse_xml(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The XML document as nested dicts (attributes without prefix, text as ``_text``).

    CPU-bound: callers on the event loop run it in a thread for large bodies. Entities (and so XXE
    and entity bombs) are refused; ``ValueError`` with the reason for anything that does not parse.
    """
    _check_xml_depth(body, max_depth)
    try:
        return xmltodict.parse(body, attr_prefix="", cdata_key="_text", disable_entities=True)
    except (expat.ExpatError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


# Files (a drop folder's, a migration's export) --------------------------------------------------

CSV_MAX_FIELD = 64 << 20  # the csv module's default, 128 KiB, is less than a legacy notes or attachment column holds


def allow_large_csv_fields() -> None:
    """Raise the csv module's field limit (process-wide) to CSV_MAX_FIELD."""
    if csv.field_size_limit() < CSV_MAX_FIELD:
        csv.field_size_limit(CSV_MAX_FIELD)


# A line (a CSV record's or a JSON Lines document's) longer than this is refused without being held:
# as long as the largest field a CSV may hold. A file with no line end (a binary, a JSON array
# export minified onto one line) was read whole into memory: one such file in a drop folder could
# kill the hub, and again at every restart, for it was still there.
MAX_LINE_CHARS = CSV_MAX_FIELD
_SKIP_CHUNK = 1 << 20


class LineTooLong(ValueError):
    """A line longer than ``MAX_LINE_CHARS``: its length and its start, the rest skipped unread."""

    def __init__(self, chars: int, head: str) -> None:
        super().__init__(f"a line of {chars:,} characters, more than the {MAX_LINE_CHARS:,} a row may have")
        self.chars = chars
        self.head = head


def bounded_lines(handle: TextIO, limit: int = MAX_LINE_CHARS) -> Iterator[str | LineTooLong]:
    """The lines of a text file as it streams, each with its line end; one longer than ``limit``
    comes as a ``LineTooLong`` (holding its first 200 characters) and is passed over in chunks."""
    read = handle.readline
    while line := read(limit + 1):
        if len(line) <= limit or line[-1] in "\n\r":
            yield line
            continue
        chars, head = len(line), line[:200]
        while (rest := read(_SKIP_CHUNK)) and rest[-1] not in "\n\r":
            chars += len(rest)
        yield LineTooLong(chars + len(rest.rstrip("\r\n")), head)


# What a file a config or a command names may hold, read whole (``read_at_most``): past it, the
# file is not what it was named as (a log, a disk image, /dev/zero given by mistake).
MAX_DOCUMENT_FILE_BYTES = 50_000_000  # a config file (a thousand routes: about 1 MB), a contract, a sample, an event
MAX_SCHEMA_FILE_BYTES = 10_000_000  # one Avro schema (the largest real ones are tens of kilobytes)


class FileTooLarge(ValueError):
    """A file past what it may hold for its use, left unread past the limit."""


def read_at_most(path: Path, limit: int, what: str = "") -> bytes:
    """The bytes of a file a config or a command names, read only up to ``limit``: a path to
    ``/dev/zero``, a device or a log file given by mistake was read until memory ran out. Raises
    ``FileTooLarge`` (naming ``what`` the file is for) past it, ``OSError`` as ``open`` does."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{what or path} holds more than {limit:,} bytes")
    return data


_ASCII_SAMPLE = b'\r\n\t ,;|"#abcxyzABCXYZ0189'  # what line ends, separators and quotes are made of


def known_text_encoding(encoding: str) -> str:
    """``encoding`` if Python has a text codec by that name; ValueError naming some otherwise."""
    try:
        "x".encode(encoding)  # LookupError for a name Python does not know, and for codecs not of text (base64)
    except LookupError as exc:
        raise ValueError(f"{exc} (text encodings: utf-8, latin-1, cp1252, utf-16, ...)") from None
    return encoding


def ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes line ends, separators and quotes as ASCII does (UTF-8, Latin-1,
    the Windows code pages): then bytes it cannot decode are kept line by line ("surrogateescape")
    and only their line is refused. UTF-16 and UTF-32 are not: there a broken character cannot be
    kept, and the text after it cannot be found."""
    try:
        return _ASCII_SAMPLE.decode(encoding) == _ASCII_SAMPLE.decode("ascii")
    except (UnicodeDecodeError, LookupError):
        return False


def undecodable(handle: TextIO, encoding: str) -> str | None:
    """Why the file under ``handle`` (opened, nothing read yet) is not text in ``encoding``, or None.
    Only for an encoding that is not ``ascii_compatible`` (UTF-16, UTF-32), where one broken
    character loses the lines after it: the file is read through once, a block at a time, then put
    back at its start. In the others a broken line is refused alone, so None at once."""
    if ascii_compatible(encoding):
        return None
    decoder, at = codecs.getincrementaldecoder(encoding)(), 0
    try:
        while block := handle.buffer.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return f"not {encoding} text at byte {at + exc.start:,} ({exc.reason})"
            except UnicodeError as exc:  # "UTF-16 stream does not start with BOM": no position to name
                return f"not {encoding} text ({exc}; without a byte order mark, name the order: utf-16-le or utf-16-be)"
            at += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return f"not {encoding} text: the file ends inside a character ({exc.reason})"
        except UnicodeError as exc:
            return f"not {encoding} text ({exc})"
        return None
    finally:
        handle.seek(0)


def text_codec(encoding: str) -> str:
    """The codec to read a file declared as ``encoding`` with: for UTF-8, ``utf-8-sig``, so that a
    byte order mark at the start (Excel's "CSV UTF-8") is skipped and not read into the first
    column's name; nothing else differs."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


@dataclass(slots=True)
class CsvRecord:
    """One record of a CSV file, as ``csv_records`` reads it."""

    line: int  # the line it starts on
    values: list[str] | None  # None: not a record (``error`` says why)
    error: str  # "" when ``values`` were read
    text: str  # its lines as they are in the file, without the last line's end


class _NumberedLines:
    """The lines a csv reader takes, numbered and kept until the record they make is done. A line
    too long is handed to the reader as a blank one and noted in ``too_long``."""

    __slots__ = ("_lines", "number", "taken", "too_long")

    def __init__(self, lines: Iterable[str | LineTooLong]) -> None:
        self._lines = iter(lines)
        self.number = 0
        self.taken: list[str] = []
        self.too_long: list[tuple[int, LineTooLong]] = []

    def __iter__(self) -> _NumberedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        if isinstance(line, LineTooLong):
            self.too_long.append((self.number, line))
            line = "\n"
        self.taken.append(line)
        return line


_SEPARATORS = (";", "\t", "|", ",")  # what exports are separated by (Excel in much of Europe writes ";")


def csv_header_problem(names: list[str], delimiter: str) -> str:
    """Why a CSV header cannot name a file's columns ("" when it can). A header read as one column
    that holds another separator is a file separated by it (a European Excel export's ";"): each
    row would be one field, every column but the first null. A name given twice: one column would
    hide the other in each row, unsaid."""
    if len(names) == 1:
        found = [sep for sep in _SEPARATORS if sep != delimiter and sep in names[0]]
        if found:
            shown = {"\t": "\\t"}.get(found[0], found[0])
            return (
                f"the header is one column, {names[0][:120]!r}: its names look separated by {found[0]!r}, not {delimiter!r}; "
                f'set delimiter: "{shown}"'
            )
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name in seen:
            return f"the header names column {name!r} twice (columns {seen[name]} and {number}): one would hide the other"
        seen[name] = number
    return ""


def csv_records(handle: TextIO, delimiter: str = ",") -> Iterator[CsvRecord]:
    """Every record of a CSV text, the header first, as the file streams (blank lines skipped).

    A quoted field may span lines (an address, a note). A stray quote at the start of a field
    opens one that is never closed where it should be, and the csv module then reads every line
    after it, up to the next quote or the end of the file, as that one field: thousands of rows
    in one record, refused whole, or, when its width happened to match, accepted with the rows
    inside a note. Read strictly (a closing quote must end its field; the end of the file may not
    fall inside one), such a record is not CSV; over several lines, or of another width than the
    header, it is taken apart: its first line is refused, saying so, and each line after it is
    read on its own, as the rows they are.
    """
    allow_large_csv_fields()
    source = _NumberedLines(bounded_lines(handle))
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    width: int | None = None
    while True:
        source.taken.clear()
        start = source.number + 1
        try:
            values: list[str] | None = next(reader)
            error = ""
        except StopIteration:
            return
        except csv.Error as exc:
            values, error = None, f"not a CSV record: {exc}"
        taken = source.taken
        if source.too_long:  # the record is refused, whatever the reader made of it
            (number, cut), *_ = source.too_long
            source.too_long.clear()
            within = f" (line {number} of the record starting here)" if number != start else ""
            yield CsvRecord(start, None, f"{cut}{within}; the line is skipped", f"{cut.head}...")
            continue
        if values == []:  # a blank line
            continue
        if len(taken) > 1 and width is not None and (values is None or len(values) != width):
            first = taken[0].rstrip("\r\n")
            yield CsvRecord(
                start,
                None,
                f"a quote opened on this line is not closed where the field ends ({len(taken)} lines were read as one "
                "record); this line is refused and the lines after it are read on their own",
                first,
            )
            for offset, line in enumerate(taken[1:], start=1):
                if line.strip():
                    yield _one_line(start + offset, line, delimiter)
            continue
        if values is not None and width is None:
            width = len(values)
        yield CsvRecord(start, values, error, "".join(taken).rstrip("\r\n"))


def _one_line(number: int, line: str, delimiter: str) -> CsvRecord:
    text = line.rstrip("\r\n")
    try:
        values = next(csv.reader([text], delimiter=delimiter, strict=True), [])
    except csv.Error as exc:
        return CsvRecord(number, None, f"not a CSV record: {exc}", text)
    return CsvRecord(number, values, "", text)
