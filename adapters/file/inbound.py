"""``file`` inbound: a drop folder of CSV or JSON Lines files, each read into events as it streams.

A file is taken once it has not changed for ``settle``. Its sha256 is taken first (a file imported
before is skipped), then its rows are read a batch at a time and handed to Kafka in file order (a
row that cannot become an event, or is not text in the file's encoding, is kept on the inbound
dead-letter topic with its line number), at most ``rows.IN_FLIGHT`` awaiting Kafka's acknowledgement
at once; once every one is acknowledged the file moves to ``done/`` with a manifest. Memory stays
flat whatever the file's size (the whole file used to be held at once, about 19 times its size:
a 20 MB export was enough to kill an inbound pod at the chart's limit, again at every restart).
If Kafka cannot acknowledge, the file stays where it is and is read again at the next poll: rows
keep their ids (sha256 and line, unless ``emit.id`` says otherwise), so a second reading is
harmless downstream. A file that cannot be read at all (no CSV header) moves to ``failed/`` with
the reason in its manifest.

Moving a file out is what records it as imported, so nothing is read while files cannot be moved:
each pass first makes and removes a file in the drop folder and in ``done/``, ``failed/`` and
``skipped/`` (a read-only mount, a folder another user owns), and while that fails the adapter is
not healthy, says why, and waits. Read anyway, every file would be imported again at every pass.
``done/`` on another file system (a link to an archive volume) is written by a copy.
"""

from __future__ import annotations

__all__ = ["FileInbound"]

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, TextIO

from adapters.file.config import FileInboundConfig
from adapters.file.rows import Unreadable, format_of, publish_rows
from bus.adapter_api import (
    Context,
    Health,
    Inbound,
    Intake,
    KafkaUnavailable,
    RetryableError,
    parse_json,
    read_at_most,
    text_codec,
)

_OWN = ("done", "failed", "skipped")  # the folders files are moved to, in the drop folder
_MAX_MANIFEST_BYTES = 1_000_000
_PROBE = ".bus-probe-"  # a file made and removed at once, to see that the folders can be written


class _NotAFile(OSError):
    """A name in the drop folder that is not a regular file (a symbolic link, a FIFO, a device)."""


def _open_file(path: Path) -> int:
    """A descriptor of ``path``, only when it is a regular file itself. A drop folder is often
    writable by others (an SFTP share): a symbolic link there could point the hub at any file it
    can read (its own credentials), to be published; a FIFO or a device would be read for ever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symbolic link
            raise _NotAFile(f"{path.name} is a symbolic link; the drop folder takes files, not links to them") from None
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise _NotAFile(f"{path.name} is not a regular file ({_KINDS.get(stat.S_IFMT(kind), 'a special file')})")
    os.set_blocking(fd, True)
    return fd


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _open_text(path: Path, encoding: str) -> TextIO:
    return open(_open_file(path), encoding=text_codec(encoding), errors="surrogateescape", newline="")  # the caller closes it


def _digest(path: Path) -> str:
    with open(_open_file(path), "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class FileInbound(Inbound[FileInboundConfig]):
    Config: ClassVar[type[FileInboundConfig]] = FileInboundConfig
    summary: ClassVar[str] = "Read CSV or JSON Lines files from a drop folder; move each to done/ once every row is on Kafka."
    one_reader: ClassVar[bool] = True  # a shared drop folder: each replica would import every file

    def __init__(self, config: FileInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._interval = config.poll_interval.total_seconds()
        self._settle = config.settle.total_seconds()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._digests: dict[str, dict[str, str]] | None = None  # what done/ holds, by content (see _imported)
        self._problem = ""  # why files cannot be moved out, so none is read
        # Files imported whose move to done/ failed (the file itself immutable, or owned by another
        # user in a sticky folder): each pass tries the move again and reads them no more. Read again,
        # each was imported anew at every pass (``duplicates: import``) or sent on to skipped/.
        self._stuck: dict[Path, dict[str, Any]] = {}

    async def start(self) -> None:
        if self._task is not None:
            return
        folder = self.config.path
        if not folder.is_dir():
            raise RetryableError(f"file {self.config.name}: drop folder {folder} does not exist")
        for sub in _OWN:
            (folder / sub).mkdir(exist_ok=True)
        self._stopping.clear()
        self._task = self.ctx.spawn(self._watch(), name=f"file-watch:{self.config.name}")
        self.ctx.logger.info("file %s watching %s/%s", self.config.name, folder, self.config.pattern)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()  # the file in hand is finished (its acks awaited) before the loop ends
            await asyncio.gather(task, return_exceptions=True)

    async def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health(False, "not watching its folder")
        return Health(not self._problem, self._problem)

    def _unmovable(self) -> str:
        """Why files cannot be moved out of the drop folder now, or "": a file is made and removed
        where a move takes it from and to (root is refused too, by a read-only mount)."""
        for folder in (self.config.path, *(self.config.path / sub for sub in _OWN)):
            try:
                folder.mkdir(exist_ok=True)
                handle, probe = tempfile.mkstemp(dir=folder, prefix=_PROBE)
                os.close(handle)
                os.unlink(probe)
            except OSError as exc:
                return f"cannot write in {folder} ({exc.strerror or exc}): no file is read until it can be moved out when done"
        return ""

    async def _move_stuck(self) -> None:
        """Try again to move each file imported but not moved to done/; one gone is forgotten."""
        for path, manifest in list(self._stuck.items()):
            if not path.exists():
                del self._stuck[path]
                continue
            try:
                await asyncio.to_thread(self._move, path, "done", {k: v for k, v in manifest.items() if k != "move_error"})
            except OSError as exc:
                manifest["move_error"] = str(exc)
            else:
                del self._stuck[path]
                self.ctx.logger.warning("file %s: %s, imported before, is moved to done/ now", self.config.name, path.name)

    def attention(self) -> str:
        """Files imported and not moved to done/: the adapter reads on, but someone must see to them."""
        return self._stuck_problem()

    def _stuck_problem(self) -> str:
        if not self._stuck:
            return ""
        names = ", ".join(f"{path.name} ({manifest['move_error']})" for path, manifest in list(self._stuck.items())[:5])
        return (
            f"{len(self._stuck)} file(s) imported and not moved to done/: {names}; they are not read again while the hub "
            "runs, and moved when they can be: make them movable, or move them away, or they are imported again after a restart"
        )

    def _said(self, problem: str) -> None:
        if problem != self._problem:
            if problem:
                self.ctx.logger.warning("file %s: %s", self.config.name, problem)
            else:
                self.ctx.logger.warning("file %s: files can be moved out of %s again; reading on", self.config.name, self.config.path)
            self._problem = problem

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            # Off the event loop: listing and stat-ing a folder of 50,000 files took 0.5 s, every pass,
            # during which no webhook of the same process was answered.
            unmovable = await asyncio.to_thread(self._unmovable)
            if self._stuck and not unmovable:
                await self._move_stuck()
            self._said(unmovable)
            for path in [] if unmovable else await asyncio.to_thread(self._ready):
                if path in self._stuck:
                    continue
                if self._stopping.is_set():
                    break
                try:
                    await self.take(path)
                except KafkaUnavailable as exc:
                    self.ctx.logger.warning("file %s: %s; %s stays and is read again", self.config.name, exc, path.name)
                    break
                except Exception as exc:  # noqa: BLE001 - one file's failure stays that file's (poison isolation)
                    await self._fail(path, f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    def _ready(self) -> list[Path]:
        """What matches the pattern and has settled: regular files, and anything else that is not a
        folder (a link, a FIFO), which ``take`` refuses to ``failed/`` rather than leave unsaid."""
        now, ready = time.time(), []
        for path in sorted(self.config.path.glob(self.config.pattern)):
            try:
                found = path.lstat()  # the name itself: a link is not followed
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(found.st_mode) or path.name.endswith(".manifest.json"):
                continue
            if (path.parent == self.config.path and path.name in _OWN) or path.name.startswith(_PROBE):
                continue  # done/, failed/ or skipped/ as a link to another volume, or a replica's probe: the adapter's own
            if not stat.S_ISREG(found.st_mode) or now - found.st_mtime >= self._settle:
                ready.append(path)
        return ready

    async def take(self, path: Path) -> dict[str, Any]:
        """Read one file into Kafka and move it; returns its manifest. KafkaUnavailable: left in place."""
        kind, encoding, delimiter = format_of(path.name, self.config.format), self.config.encoding, self.config.delimiter
        try:
            checksum = await asyncio.to_thread(_digest, path)  # off the event loop, a block at a time
        except _NotAFile as exc:
            manifest: dict[str, Any] = {"file": path.name, "sha256": "none", "error": str(exc)}
            await asyncio.to_thread(self._move, path, "failed", manifest)  # the link or FIFO itself is moved; nothing is read through it
            self.ctx.logger.warning("file %s: %s; moved to failed/, nothing read", self.config.name, exc)
            return manifest
        manifest = {"file": path.name, "sha256": checksum, "rows": 0, "accepted": 0, "rejected": 0}
        if self._digests is None:
            self._digests = await asyncio.to_thread(self._read_digests)  # many manifests: off the event loop, once
        earlier = self._digests.get(checksum) if self.config.duplicates == "skip" else None
        if earlier is not None:
            manifest["duplicate_of"] = earlier
            await asyncio.to_thread(self._move, path, "skipped", manifest)
            self.ctx.logger.warning(
                "file %s: %s has the content of %s, imported before; moved to skipped/ (duplicates: import reads it again)",
                self.config.name, path.name, earlier["file"],
            )  # fmt: skip
            return manifest
        with await asyncio.to_thread(_open_text, path, encoding) as handle:
            try:
                counts = await publish_rows(
                    self._intake, self.sink, handle, origin=f"file:{path.name}", checksum=checksum, kind=kind, encoding=encoding,
                    delimiter=delimiter,
                )  # fmt: skip
            except Unreadable as exc:  # before any row: the file as a whole
                manifest["error"] = str(exc)
                await asyncio.to_thread(self._move, path, "failed", manifest)
                self.ctx.logger.warning("file %s: %s cannot be read (%s); moved to failed/", self.config.name, path.name, exc)
                return manifest
        manifest.update(counts)
        # Imported: this process does not read it again, even if the move fails (it says so).
        self._digests[checksum] = {"file": path.name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            await asyncio.to_thread(self._move, path, "done", manifest)
        except OSError as exc:
            self._stuck[path] = {**manifest, "move_error": str(exc)}
            self.ctx.logger.warning("file %s: %s", self.config.name, self._stuck_problem())
            return manifest
        self.ctx.logger.info(
            "file %s: %s done: %d rows, %d accepted, %d rejected, sha256 %s",
            self.config.name,
            path.name,
            manifest["rows"],
            manifest["accepted"],
            manifest["rejected"],
            checksum[:16],
        )
        return manifest

    def _read_digests(self) -> dict[str, dict[str, str]]:
        """SHA-256 -> the file imported with it, from done/'s manifests (they outlive restarts and
        are shared by every replica reading the folder); ``take`` keeps it up to date after."""
        found: dict[str, dict[str, str]] = {}
        for manifest_path in sorted((self.config.path / "done").glob("*.manifest.json")):
            try:
                # A shared folder: anyone may have written it (a manifest holds about 300 bytes).
                seen = parse_json(read_at_most(manifest_path, _MAX_MANIFEST_BYTES))
                found.setdefault(str(seen["sha256"]), {"file": str(seen["file"]), "at": str(seen.get("at", ""))})
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Edited or truncated: it does not count, so a file it described could be imported again.
                self.ctx.logger.warning(
                    "file %s: %s cannot be read (%r); the file it describes no longer counts as imported",
                    self.config.name,
                    manifest_path,
                    exc,
                )
        return found

    async def _fail(self, path: Path, reason: str) -> None:
        """A file that failed in a way no one foresaw: to ``failed/`` with the reason, so the next files go on."""
        manifest: dict[str, Any] = {"file": path.name, "sha256": "unknown", "error": reason}
        try:
            manifest["sha256"] = await asyncio.to_thread(_digest, path)  # a large file: off the event loop
            await asyncio.to_thread(self._move, path, "failed", manifest)
        except OSError as exc:
            self.ctx.logger.warning("file %s: %s failed (%s) and cannot be moved to failed/ (%r)", self.config.name, path.name, reason, exc)
            return
        self.ctx.logger.warning("file %s: %s failed (%s); moved to failed/", self.config.name, path.name, reason)

    def _move(self, path: Path, where: str, manifest: dict[str, Any]) -> None:
        """In a thread (``asyncio.to_thread``): a folder on another volume is written by a copy."""
        manifest["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        target = self.config.path / where / path.name
        if target.exists():  # the same name again: keep both
            target = target.with_name(f"{path.stem}.{manifest['sha256'][:8]}{path.suffix}")
        target.with_name(target.name + ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # done/ on another file system (a link to an archive volume): copied under a name no
            # reader takes, renamed there, then the original removed.
            part = target.with_name(f".{target.name}.part")
            shutil.copy2(path, part)
            os.replace(part, target)
            os.unlink(path)
