"""``file`` outbound: append events to rolling JSON Lines or CSV files.

Lines are written with group commit (bus/batching.py): calls that arrive while a batch is being
written and fsynced go in the next batch, so a busy subscriber costs one fsync per batch. The
file being written ends in ``.part``; it is renamed to its final name when it rolls (size or age)
and when the hub stops. At start, a ``.part`` left by a crash is cut after its last complete line
and renamed, so nothing half-written is ever published and every acknowledged line is kept.
"""

from __future__ import annotations

__all__ = ["FileOutbound", "RollingFiles"]

import asyncio
import csv
import io
import os
import re
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from adapters.file.config import FileOutboundConfig, RollingFilesConfig
from bus.adapter_api import Body, Context, Event, GroupCommit, Health, Outbound, PermanentError, RetryableError, target_json, text_cell

# What makes a spreadsheet take a cell for a formula (OWASP's CSV injection list), and a number,
# which starts with + or - and is no formula.
_FORMULA_STARTS = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


C = TypeVar("C", bound=RollingFilesConfig)


class RollingFiles(Outbound[C]):
    """Lines rendered from events, written a batch at a time (group commit) to a file that rolls by
    size and age: what the ``file`` and ``sftp`` outbounds share. Where the file is, and how it is
    written, completed and recovered after a crash, is theirs (``_write``, ``_finish``,
    ``_recover_leftovers``, ``health``)."""

    def __init__(self, config: C, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._columns = list(config.body or {})
        self._prefix = config.prefix or config.name
        self._ext = config.format
        self._roll_s = config.roll_every.total_seconds()
        self._file: Any = None  # the file being written, None between files
        self._part: Any = None  # its name (a Path here, a remote path for sftp)
        self._opened = 0.0
        self._size = 0
        self._seq = 0
        self._lines: GroupCommit[bytes] = GroupCommit(self._write_lines, max_batch=10_000, name=f"{config.type}-out:{config.name}")
        self._ticker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one thread at a time touches the open file
        self.files = 0  # files completed since start

    async def start(self) -> None:
        await self._recover_leftovers()
        if self._ticker is None:
            self._ticker = self.ctx.spawn(self._roll_by_age(), name=f"{self.config.type}-roll:{self.config.name}")

    async def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        await self._lines.idle()
        async with self._lock:
            await self._finish()

    async def _roll_by_age(self) -> None:
        """A file whose subscriber went quiet is completed on time, not at the next event."""
        while True:
            await asyncio.sleep(min(self._roll_s, 1.0))
            if self._file is not None and time.monotonic() - self._opened >= self._roll_s:
                async with self._lock:
                    try:
                        await self._finish()
                    except (OSError, RetryableError) as exc:
                        self.ctx.logger.warning("%s %s: completing %s: %s", self.config.type, self.config.name, self._part, exc)

    def progress(self) -> dict[str, int | str]:
        return {"files": self.files}

    def _line(self, event: Event) -> bytes:
        record = self._body.render(event)
        if self._ext == "jsonl":
            return target_json(record, "line").encode() + b"\n"
        cells = [text_cell(record[c], f"column {c}") for c in self._columns]
        if self.config.formulas != "keep":
            cells = [self._guard(column, cell) for column, cell in zip(self._columns, cells, strict=True)]
        out = io.StringIO()
        csv.writer(out, delimiter=self.config.delimiter, lineterminator="\n").writerow(cells)
        return out.getvalue().encode()

    def _guard(self, column: str, cell: str) -> str:
        """A cell a spreadsheet would run as a formula: escaped with a leading ', or refused."""
        if not cell or cell[0] not in _FORMULA_STARTS or _NUMBER.fullmatch(cell):
            return cell
        if self.config.formulas == "refuse":
            raise PermanentError(
                f"column {column} starts with {cell[0]!r}, which a spreadsheet runs as a formula ({cell[:40]!r}); "
                "formulas: refuse (set escape to write it with a leading ')"
            )
        return "'" + cell

    async def deliver(self, event: Event) -> None:
        await self._lines.submit(self._line(event))

    async def _write_lines(self, lines: list[bytes]) -> None:
        """One write, one flush, one fsync for every line in flight."""
        async with self._lock:
            await self._write(b"".join(lines))

    # -- where the files are: the subclass's -----------------------------------------------------
    async def _recover_leftovers(self) -> None:
        """Complete the ``.part`` files a crash left (every whole line kept, a torn one cut)."""
        raise NotImplementedError

    async def _write(self, data: bytes) -> None:
        """Append one batch's lines (under the lock), rolling first when due; RetryableError when
        they are not written (nothing of them is left in the file: a retry writes them again)."""
        raise NotImplementedError

    async def _finish(self) -> None:
        """Complete the file being written, if there is one (under the lock)."""
        raise NotImplementedError

    def _rolls_now(self) -> bool:
        return self._file is not None and (self._size >= self.config.roll_bytes or time.monotonic() - self._opened >= self._roll_s)

    def _next_name(self) -> str:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return f"{self._prefix}-{stamp}-{os.getpid()}-{self._seq:04d}.{self._ext}.part"

    def _csv_header(self) -> bytes:
        out = io.StringIO()
        csv.writer(out, delimiter=self.config.delimiter, lineterminator="\n").writerow(self._columns)
        return out.getvalue().encode()


class FileOutbound(RollingFiles[FileOutboundConfig]):
    Config: ClassVar[type[FileOutboundConfig]] = FileOutboundConfig
    summary: ClassVar[str] = "Append each event to rolling JSON Lines or CSV files; a file is renamed from .part when complete."

    # -- where the files are: this host's disk (the sftp outbound puts them on a server) ----------
    async def _recover_leftovers(self) -> None:
        """Complete the ``.part`` files a crash left (every whole line kept, a torn one cut)."""
        try:
            self.config.path.mkdir(parents=True, exist_ok=True)
            for part in sorted(self.config.path.glob(f"{self._prefix}-*.{self._ext}.part")):
                try:
                    await asyncio.to_thread(_recover, part)
                except OSError as exc:  # that one alone: the others are completed, and the adapter starts
                    self.ctx.logger.warning("file %s: cannot complete %s left by an earlier run: %s", self.config.name, part.name, exc)
                    continue
                self.ctx.logger.warning("file %s: completed %s left by an earlier run", self.config.name, part.name)
        except OSError as exc:
            raise RetryableError(f"file {self.config.name}: cannot use {self.config.path}: {exc}") from exc

    async def _write(self, data: bytes) -> None:
        """Append one batch's lines (under the lock); RetryableError when they are not written."""
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            raise RetryableError(f"file {self.config.name}: writing {self._part}: {exc}") from exc

    async def _finish(self) -> None:
        """Complete the file being written, if there is one (under the lock)."""
        await asyncio.to_thread(self._complete)

    async def health(self) -> Health:
        ok = os.access(self.config.path, os.W_OK)
        return Health(ok, "" if ok else f"{self.config.path} is not writable")

    # -- file handling (in a worker thread: blocking I/O) ----------------------------------------
    def _append(self, data: bytes) -> None:
        if self._rolls_now():
            self._complete()
        if self._file is None:
            self._open()
        try:
            self._file.write(data)
            self._file.flush()
            if self.config.fsync:
                os.fsync(self._file.fileno())
        except OSError:
            # Cut the file back to before this batch so a retry does not leave a torn line.
            self._file.truncate(self._size)
            self._file.seek(self._size)
            raise
        self._size += len(data)

    def _open(self) -> None:
        # Created, never opened: an outbox is often writable by others (an SFTP share), and a link
        # planted at the next name would have had the hub write wherever it points.
        while True:
            self._part = self.config.path / self._next_name()
            try:
                fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                break
            except FileExistsError:
                continue
        self._file = open(fd, "wb")  # noqa: SIM115 (kept open across batches; closed in _complete)
        self._opened, self._size = time.monotonic(), 0
        if self._ext == "csv":
            header = self._csv_header()
            self._file.write(header)
            self._size = len(header)

    def _complete(self) -> None:
        if self._file is None or self._part is None:
            return
        self._file.close()
        self._part.rename(self._part.with_suffix(""))  # drop .part: the file is complete
        if self.config.fsync:
            _fsync_dir(self._part.parent)
        self._file, self._part = None, None
        self.files += 1


def _recover(part: Path) -> None:
    """Keep every complete line of a file a crash left behind, then publish it. Only a regular
    file: a link with that name (planted in a shared outbox) is not followed, nor cut."""
    if not stat.S_ISREG(part.lstat().st_mode):
        raise OSError(f"{part.name} is not a regular file (a link?); it is left as it is")
    data = part.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(part, "r+b") as f:
            f.truncate(end)
    part.rename(part.with_suffix(""))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
