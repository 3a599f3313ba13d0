"""``sftp`` inbound: a drop folder on an SFTP server, read as the ``file`` inbound reads a local one.

Partners, banks, payroll and ERP exports hand files over by SFTP more than any other way. Each pass
lists the folder; a file is taken once it has shown the same size and modification time for
``settle`` over two looks (the server's clock is not compared with ours, so a skewed server
neither hides files nor hands over half-uploaded ones). It is fetched into a temporary file
(``max_file_bytes`` at most), its SHA-256 taken (a content imported before goes to ``skipped/``),
its rows published as the ``file`` inbound's are (adapters/file/rows.py: bad rows on the inbound
dead-letter topic with their line numbers, at most ``rows.IN_FLIGHT`` unacknowledged), and once
every row is acknowledged it is moved on the server to ``done/`` beside a manifest. A file that
cannot be read at all goes to ``failed/`` with the reason in its manifest. Kafka not acknowledging
leaves the file where it is for the next pass (rows keep their ids: digest and line).

With ``after: move`` (the default), moving a file out is what records it as imported, so nothing
is fetched while files cannot be moved: each pass makes and removes a probe file in the folder and
in ``done/``, ``failed/`` and ``skipped/`` (an account that may read but not rename), and while
that fails the adapter is not healthy, says why, and waits. With ``after: delete`` (each file
removed once read) or ``keep`` (left for an account that may only read), what was read is
remembered on the checkpoint topic instead (name, size and time; the newest contents' digests),
saved before a file is deleted. A server that cannot be reached or refuses the login (or shows
another host key) is said the same way and tried again every ``poll_interval``.
"""

from __future__ import annotations

__all__ = ["SftpInbound"]

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import os
import posixpath
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from adapters.file.rows import Unreadable, format_of, publish_rows
from adapters.sftp.config import SftpInboundConfig
from adapters.sftp.connection import SftpRefused, asyncssh, open_sftp, sftp_errors
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError, parse_json, text_codec

_OWN = ("done", "failed", "skipped")
_PROBE = ".bus-probe-"
_MANIFEST = ".manifest.json"
_DIGESTS_KEPT = 1000  # after: delete or keep: contents remembered, to skip a file sent again (the newest)
_UNREACHABLE = (OSError, TimeoutError, asyncssh.Error)  # the connection, not one file: the pass ends, the next logs in again


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class SftpInbound(Inbound[SftpInboundConfig]):
    Config: ClassVar[type[SftpInboundConfig]] = SftpInboundConfig
    summary: ClassVar[str] = "Read CSV or JSON Lines files from a folder on an SFTP server; move each to done/ there once on Kafka."
    one_reader: ClassVar[bool] = True  # one folder: each replica would import every file

    position_in_kafka: ClassVar[bool] = True  # with after: delete or keep, what was read is remembered only there

    @classmethod
    def position_of(cls, config: SftpInboundConfig) -> dict[str, Any] | None:
        """With ``after: delete`` or ``keep``, the files read are remembered by name: in this folder
        (another folder's memory is not used). With ``move``, done/ on the server is the record."""
        return None if config.after == "move" else {"path": config.path, "pattern": config.pattern}

    def __init__(self, config: SftpInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._interval = config.poll_interval.total_seconds()
        self._settle = config.settle.total_seconds()
        self._where = f"sftp {config.name} ({config.username}@{config.host}:{config.port} {config.path})"
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connection: Any = None
        self._sftp: Any = None
        self._problem = "not started"
        # name -> (size, mtime, when first seen so, monotonic): a file is taken once unchanged for settle
        self._seen: dict[str, tuple[int, int, float]] = {}
        self._digests: dict[str, dict[str, str]] | None = None  # what done/ holds, by content
        self._stuck: dict[str, str] = {}  # imported, not moved out: name -> why (not fetched again while the hub runs)
        self._unsafe: list[str] = []  # names the server listed that no file in the folder can have ("../x", "a/b")
        # after: delete or keep: the files read, name -> [size, mtime, outcome], and the contents read
        # (sha256 -> file, time; the newest _DIGESTS_KEPT), as saved on the checkpoint topic.
        self._memory: dict[str, Any] | None = None
        self._signature: tuple[int, int] = (0, 0)  # the size and time of the file being taken
        self.files = 0  # files imported since start

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = self.ctx.spawn(self._watch(), name=f"sftp-watch:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()  # the file in hand is finished (its acks awaited) before the loop ends
            await asyncio.gather(task, return_exceptions=True)
        self._close()

    async def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health(False, "not watching its folder")
        return Health(not self._problem, self._problem)

    def progress(self) -> dict[str, int | str]:
        return {"files": self.files}

    def attention(self) -> str:
        said = [self._unsafe_said()] if self._unsafe else []
        if self._stuck:
            names = ", ".join(f"{name} ({why})" for name, why in list(self._stuck.items())[:5])
            said.append(
                f"{len(self._stuck)} file(s) imported and not put away on the server (moved to done/, or deleted): {names}; not "
                "fetched again while the hub runs: move them away, or they are imported again after a restart"
            )
        return "; ".join(said)

    def _unsafe_said(self) -> str:
        names = ", ".join(repr(name) for name in self._unsafe[:5]) + (", ..." if len(self._unsafe) > 5 else "")
        return (
            f"the server listed {len(self._unsafe)} name(s) in {self.config.path} that no file there can have ({names}: a "
            "name holding '/' reaches outside the folder); passed over"
        )

    def _said(self, problem: str) -> None:
        if problem != self._problem:
            if problem:
                self.ctx.logger.warning("%s: %s", self._where, problem)
            elif self._problem != "not started":
                self.ctx.logger.warning("%s: reading on", self._where)
            self._problem = problem

    def _close(self) -> None:
        connection, self._connection, self._sftp = self._connection, None, None
        if connection is not None:
            connection.close()

    # -- the passes --------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._sftp is None:
                    self._connection, self._sftp = await open_sftp(self.config)
                    self.ctx.logger.info("%s: logged in, watching %s", self._where, self.config.pattern)
                await self._pass()
            except SftpRefused as exc:
                self._close()
                self._said(str(exc))
            except (RetryableError, *_UNREACHABLE) as exc:
                self._close()
                self._said(
                    str(exc) if isinstance(exc, RetryableError) else f"the connection failed: {sftp_errors(exc)}; logged in again next"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def _pass(self) -> None:
        if self.config.after == "move":
            unmovable = await self._unmovable()
            self._said(unmovable)
            if unmovable:
                return
        else:
            if self._memory is None:
                self._memory = await self._recall()
            self._said("")
        for name, attrs in await self._ready():
            if self._stopping.is_set():
                break
            try:
                await self.take(name, attrs)
            except KafkaUnavailable as exc:
                self.ctx.logger.warning("%s: %s; %s stays on the server and is fetched again", self._where, exc, name)
                break
            except asyncssh.SFTPNoSuchFile:  # taken away since the listing (by the partner, another reader): nothing to do
                self._seen.pop(name, None)
                self.ctx.logger.info("%s: %s is no longer in the folder; passed over", self._where, name)
            except asyncssh.SFTPError as exc:  # this file: the server refused an operation on it
                await self._fail(name, f"the server refused it: {sftp_errors(exc)}")
            except (RetryableError, *_UNREACHABLE):
                raise  # the connection, not this file: logged in again next pass
            except Exception as exc:  # one file's failure stays that file's (poison isolation)
                self.ctx.logger.exception("%s: %s could not be imported", self._where, name)
                await self._fail(name, f"it could not be imported: {type(exc).__name__}: {exc}")

    def _at(self, *parts: str) -> str:
        return posixpath.join(self.config.path, *parts)

    async def _unmovable(self) -> str:
        """Why files cannot be moved out of the folder now, or "": a probe file is made and removed
        where a move takes files from and to."""
        for folder in (self.config.path, *(self._at(sub) for sub in _OWN)):
            probe = posixpath.join(folder, f"{_PROBE}{uuid.uuid4().hex[:12]}")
            try:
                if folder != self.config.path and not await self._sftp.isdir(folder):
                    await self._sftp.mkdir(folder)
                async with self._sftp.open(probe, "wb"):
                    pass
                await self._sftp.remove(probe)
            except asyncssh.SFTPError as exc:
                return (
                    f"cannot write in {folder} on the server ({sftp_errors(exc)}): no file is fetched until it can be moved out when done"
                )
        return ""

    async def _ready(self) -> list[tuple[str, Any]]:
        """Files that match the pattern and have shown the same size and time for ``settle``;
        anything else that is not a folder (a link, a special file) too, which ``take`` refuses to
        ``failed/`` rather than leave unsaid."""
        now, ready, present = time.monotonic(), [], set()
        for entry in sorted(await self._sftp.readdir(self.config.path), key=lambda e: str(e.filename)):
            name, attrs = str(entry.filename), entry.attrs
            if name in (".", "..", *_OWN) or name.startswith(_PROBE) or name.endswith(_MANIFEST):
                continue
            if "/" in name or "\0" in name:  # a server's bug, or a hostile one: joined to the path, "../x" is another folder's file
                if name not in self._unsafe:
                    self._unsafe.append(name)
                    self.ctx.logger.warning("%s: %s", self._where, self._unsafe_said())
                continue
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY or not fnmatch.fnmatchcase(name, self.config.pattern):
                continue
            if name in self._stuck:
                continue
            present.add(name)
            if self._memory is not None and self._memory["files"].get(name, [None, None])[:2] == [attrs.size, attrs.mtime]:
                continue  # read before, unchanged since (after: keep; a delete that failed)
            if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                ready.append((name, attrs))
                continue
            signature = (int(attrs.size or 0), int(attrs.mtime or 0))
            seen = self._seen.get(name)
            if seen is None or seen[:2] != signature:
                self._seen[name] = (*signature, now)
                if self._settle > 0:
                    continue
            elif now - seen[2] < self._settle:
                continue
            ready.append((name, attrs))
        for gone in set(self._seen) - present:
            del self._seen[gone]
        if self._memory is not None:  # gone from the folder: forgotten (the partner's job cleared it)
            files = self._memory["files"]
            for gone in [n for n in files if n not in present and fnmatch.fnmatchcase(n, self.config.pattern)]:
                del files[gone]
        return ready

    async def take(self, name: str, attrs: Any) -> dict[str, Any]:
        """Fetch one file, publish its rows, put it away; returns its manifest."""
        size = int(attrs.size or 0)
        self._signature = (size, int(attrs.mtime or 0))  # what after: delete or keep remember it by
        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
            kind = "a symbolic link" if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK else "not a regular file"
            return await self._refuse(name, {"sha256": "none"}, f"{name} is {kind}; the drop folder takes files")
        if size > self.config.max_file_bytes:
            reason = f"{name} holds {size:,} bytes, more than max_file_bytes ({self.config.max_file_bytes:,}); not fetched"
            return await self._refuse(name, {"sha256": "none", "bytes": size}, reason)
        handle, local = tempfile.mkstemp(prefix=f"bus-sftp-{self.config.name}-")
        os.close(handle)
        try:
            await self._sftp.get(self._at(name), local)
            fetched = (await asyncio.to_thread(os.stat, local)).st_size
            now = await self._sftp.lstat(self._at(name))
            if fetched != size or int(now.size or 0) != size or int(now.mtime or 0) != int(attrs.mtime or 0):
                self._seen.pop(name, None)  # written to meanwhile: settles again
                self.ctx.logger.info("%s: %s changed while it was fetched; taken once it settles again", self._where, name)
                return {"file": name, "changed": True}
            return await self._import(name, Path(local))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)

    async def _import(self, name: str, local: Path) -> dict[str, Any]:
        checksum = await asyncio.to_thread(_digest, local)
        manifest: dict[str, Any] = {"file": name, "sha256": checksum, "rows": 0, "accepted": 0, "rejected": 0}
        if self._digests is None:
            self._digests = await self._read_digests()
        earlier = self._digests.get(checksum) if self.config.duplicates == "skip" else None
        if earlier is not None:
            manifest["duplicate_of"] = earlier
            await self._move(name, "skipped", manifest)
            self.ctx.logger.warning(
                "%s: %s has the content of %s, imported before; moved to skipped/ (duplicates: import reads it again)",
                self._where, name, earlier["file"],
            )  # fmt: skip
            return manifest
        encoding = self.config.encoding
        text = await asyncio.to_thread(local.open, encoding=text_codec(encoding), errors="surrogateescape", newline="")
        with text:
            try:
                counts = await publish_rows(
                    self._intake, self.sink, text, origin=f"sftp:{name}", checksum=checksum, kind=format_of(name, self.config.format),
                    encoding=encoding, delimiter=self.config.delimiter,
                )  # fmt: skip
            except Unreadable as exc:
                return await self._refuse(name, manifest, f"{name} cannot be read ({exc})")
        manifest.update(counts)
        self._digests[checksum] = {"file": name, "at": _now()}  # imported: not read again here, even if the move fails
        try:
            await self._move(name, "done", manifest)
        except asyncssh.SFTPError as exc:
            self._stuck[name] = sftp_errors(exc)
            self.ctx.logger.warning("%s: %s", self._where, self.attention())
            return manifest
        self.files += 1
        self.ctx.logger.info(
            "%s: %s done: %d rows, %d accepted, %d rejected, sha256 %s",
            self._where, name, manifest["rows"], manifest["accepted"], manifest["rejected"], checksum[:16],
        )  # fmt: skip
        return manifest

    async def _refuse(self, name: str, manifest: dict[str, Any], reason: str) -> dict[str, Any]:
        manifest = {"file": name, **manifest, "error": reason}
        await self._move(name, "failed", manifest)
        self.ctx.logger.warning("%s: %s; moved to failed/", self._where, reason)
        return manifest

    async def _fail(self, name: str, reason: str) -> None:
        """A file the server refused an operation on: to ``failed/`` with the reason, or, when even
        that is refused, left where it is and not tried again while the hub runs (said)."""
        try:
            await self._refuse(name, {"sha256": "unknown"}, f"{name}: {reason}")
        except asyncssh.SFTPError as exc:
            self._stuck[name] = f"{reason}; and moving it to failed/: {sftp_errors(exc)}"
            self.ctx.logger.warning("%s: %s", self._where, self.attention())

    async def _read_digests(self) -> dict[str, dict[str, str]]:
        """SHA-256 -> the file imported with it, from done/'s manifests on the server (or, with
        ``after: delete`` or ``keep``, from what the hub remembers)."""
        if self._memory is not None:
            digests: dict[str, dict[str, str]] = self._memory["digests"]
            return digests
        found: dict[str, dict[str, str]] = {}
        for entry in sorted(await self._sftp.readdir(self._at("done")), key=lambda e: str(e.filename)):
            name = str(entry.filename)
            if not name.endswith(_MANIFEST):
                continue
            try:
                async with self._sftp.open(self._at("done", name), "rb") as handle:
                    seen = parse_json(await handle.read(1 << 20))  # anyone with the account may have written it
                found.setdefault(str(seen["sha256"]), {"file": str(seen["file"]), "at": str(seen.get("at", ""))})
            except (asyncssh.SFTPError, ValueError, KeyError, TypeError) as exc:
                self.ctx.logger.warning(
                    "%s: done/%s cannot be read (%r); the file it describes no longer counts as imported", self._where, name, exc
                )
        return found

    async def _recall(self) -> dict[str, Any]:
        """What was read before (after: delete or keep), from the checkpoint topic."""
        saved = await self.ctx.checkpoints.load(self.config.name) if self.ctx.checkpoints is not None else None
        files, digests = (saved or {}).get("files"), (saved or {}).get("digests")
        return {"files": files if isinstance(files, dict) else {}, "digests": digests if isinstance(digests, dict) else {}}

    async def _remember(self, name: str, where: str, manifest: dict[str, Any]) -> None:
        """after: delete or keep: the file's outcome saved before the file is deleted (a delete
        that is not saved would be harmless; a file deleted and not remembered, too)."""
        assert self._memory is not None
        self._memory["files"][name] = [*self._signature, where]
        digests = self._memory["digests"]
        if where == "done" and manifest.get("sha256") not in (None, "none", "unknown"):
            digests[manifest["sha256"]] = {"file": name, "at": manifest["at"]}
            for old in list(digests)[: max(0, len(digests) - _DIGESTS_KEPT)]:
                del digests[old]
        self.ctx.logger.info("%s: %s", self._where, json.dumps(manifest, ensure_ascii=False))  # the manifest, in the log
        if self.ctx.checkpoints is None:
            return
        try:
            await self.ctx.checkpoints.save(self.config.name, self._memory)
        except KafkaUnavailable as exc:  # not read again by this process; after a restart it would be (its rows keep their ids)
            self.ctx.logger.warning("%s: what was read could not be saved (%s); saved with the next file", self._where, exc)

    async def _move(self, name: str, where: str, manifest: dict[str, Any]) -> None:
        """Put a file away once read: to ``where`` (done/, failed/, skipped/) beside its manifest,
        or, with ``after: delete`` or ``keep``, remembered (and deleted)."""
        manifest["at"] = _now()
        if self.config.after != "move":
            await self._remember(name, where, manifest)
            if self.config.after == "delete":
                await self._sftp.remove(self._at(name))  # refused: SFTPError, the file stays remembered (not read again)
            self._seen.pop(name, None)
            return
        target = name
        if await self._sftp.exists(self._at(where, target)):  # the same name again: keep both
            stem, suffix = posixpath.splitext(name)
            target = f"{stem}.{str(manifest.get('sha256', 'x'))[:8]}-{uuid.uuid4().hex[:6]}{suffix}"
        async with self._sftp.open(self._at(where, target + _MANIFEST), "w") as handle:
            await handle.write(json.dumps(manifest, indent=2) + "\n")
        await self._sftp.rename(self._at(name), self._at(where, target))
        self._seen.pop(name, None)
