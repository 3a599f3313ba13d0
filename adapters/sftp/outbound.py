"""``sftp`` outbound: events appended to rolling JSON Lines or CSV files in a folder on an SFTP server.

The lines, their batches (group commit) and the rolls are the ``file`` outbound's
(adapters/file/outbound.py ``RollingFiles``); here the file is on the server. A batch is written at
the file's known end and, with ``fsync``, fsynced there (``fsync@openssh.com``) before its events
count as delivered. A batch that fails (the connection lost, the server's disk full) leaves the
file as it was before it: the next try logs in again, cuts the ``.part`` back to its last
acknowledged byte and writes the batch again, so the partner never finds a torn or doubled line.
A ``.part`` left by a crash is completed at start like a local one: every whole line kept, a torn
last line cut, then renamed.
"""

from __future__ import annotations

__all__ = ["SftpOutbound"]

import asyncio
import fnmatch
import posixpath
import time
from typing import Any, ClassVar

from adapters.file.outbound import RollingFiles
from adapters.sftp.config import SftpOutboundConfig
from adapters.sftp.connection import asyncssh, open_sftp, sftp_errors
from bus.adapter_api import Context, Health, RetryableError

_TAIL = 64 * 1024  # a crash's leftover is read back from its end this much at a time, for its last line end
_FAILED = (OSError, TimeoutError, asyncssh.Error)


class SftpOutbound(RollingFiles[SftpOutboundConfig]):
    Config: ClassVar[type[SftpOutboundConfig]] = SftpOutboundConfig
    summary: ClassVar[str] = (
        "Append each event to rolling JSON Lines or CSV files in a folder on an SFTP server; renamed from .part when complete."
    )

    def __init__(self, config: SftpOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._where = f"sftp {config.name} ({config.username}@{config.host}:{config.port} {config.path})"
        self._connection: Any = None
        self._sftp: Any = None
        self._problem = ""
        self._no_fsync_said = False

    async def stop(self) -> None:
        try:
            await super().stop()
        except RetryableError as exc:  # the server is gone: the .part stays, completed at the next start
            self.ctx.logger.warning("%s: the file being written is left as %s: %s", self._where, self._part, exc)
        finally:
            self._close()

    async def health(self) -> Health:
        return Health(not self._problem, self._problem)

    def _close(self) -> None:
        connection, self._connection, self._sftp, self._file = self._connection, None, None, None
        if connection is not None:
            connection.close()

    async def _client(self) -> Any:
        if self._sftp is None:
            try:
                self._connection, self._sftp = await open_sftp(self.config)
            except RetryableError as exc:
                self._problem = str(exc)
                raise
            self._problem = ""
        return self._sftp

    def _failed(self, exc: BaseException, doing: str) -> RetryableError:
        """The connection is dropped (the file handle with it): the next try logs in again and cuts
        the file back to what was acknowledged."""
        self._close()
        self._problem = f"{doing}: {sftp_errors(exc)}"
        return RetryableError(f"{self._where}: {self._problem}")

    def _at(self, name: str) -> str:
        return posixpath.join(self.config.path, name)

    # -- RollingFiles' hooks --------------------------------------------------------------------
    async def _recover_leftovers(self) -> None:
        sftp = await self._client()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await sftp.makedirs(self.config.path, exist_ok=True)
                entries = await sftp.readdir(self.config.path)
        except _FAILED as exc:
            raise self._failed(exc, f"cannot use {self.config.path}") from None
        for entry in sorted(entries, key=lambda e: str(e.filename)):
            name = str(entry.filename)
            if not fnmatch.fnmatchcase(name, f"{self._prefix}-*.{self._ext}.part"):
                continue
            if entry.attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                self.ctx.logger.warning("%s: %s is not a regular file (a link?); it is left as it is", self._where, name)
                continue
            try:
                async with asyncio.timeout(self.config.timeout_s * 4):
                    await self._recover(sftp, name, int(entry.attrs.size or 0))
            except _FAILED as exc:  # that one alone: the others are completed, and the adapter starts
                self.ctx.logger.warning("%s: cannot complete %s left by an earlier run: %s", self._where, name, sftp_errors(exc))
                continue
            self.ctx.logger.warning("%s: completed %s left by an earlier run", self._where, name)

    async def _recover(self, sftp: Any, name: str, size: int) -> None:
        """Cut after the last line end, then drop ``.part``."""
        end = 0
        async with sftp.open(self._at(name), "r+b") as handle:
            at = size
            while at > 0 and not end:
                start = max(0, at - _TAIL)
                chunk = await handle.read(at - start, start)
                found = chunk.rfind(b"\n")
                if found >= 0:
                    end = start + found + 1
                at = start
            if end < size:
                await handle.truncate(end)
        await sftp.rename(self._at(name), self._at(name.removesuffix(".part")))

    async def _write(self, data: bytes) -> None:
        sftp = await self._client()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                if self._rolls_now():
                    await self._complete(sftp)
                if self._file is None:
                    await (self._reopen(sftp) if self._part is not None else self._open(sftp))
                await self._file.write(data, self._size)
                if self.config.fsync:
                    await self._fsync()
        except _FAILED as exc:
            raise self._failed(exc, f"writing {self._part}") from None
        self._size += len(data)

    async def _finish(self) -> None:
        if self._part is None:
            return
        sftp = await self._client()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self._complete(sftp)
        except _FAILED as exc:
            raise self._failed(exc, f"completing {self._part}") from None

    # -- the file on the server -----------------------------------------------------------------
    async def _open(self, sftp: Any) -> None:
        """A new ``.part``, made exclusively: an outbox others write to may hold a planted name."""
        while True:
            self._part = self._at(self._next_name())
            try:
                self._file = await sftp.open(self._part, "xb")
                break
            except asyncssh.SFTPFailure:
                if not await sftp.exists(self._part):
                    raise
        self._opened, self._size = time.monotonic(), 0
        if self._ext == "csv":
            header = self._csv_header()
            await self._file.write(header, 0)
            self._size = len(header)

    async def _reopen(self, sftp: Any) -> None:
        """The ``.part`` a failed batch was written to: cut back to what was acknowledged."""
        try:
            self._file = await sftp.open(self._part, "r+b")
        except asyncssh.SFTPNoSuchFile:
            if await sftp.exists(self._part.removesuffix(".part")):  # completed, its answer lost with the connection
                self.files += 1
            else:  # removed meanwhile (by the partner, by hand)
                self.ctx.logger.warning("%s: %s is gone from the server, its lines with it; a new file is started", self._where, self._part)
            self._part = None
            await self._open(sftp)
            return
        await self._file.truncate(self._size)

    async def _fsync(self) -> None:
        try:
            await self._file.fsync()
        except asyncssh.SFTPOpUnsupported:
            if not self._no_fsync_said:
                self._no_fsync_said = True
                self.ctx.logger.warning("%s: the server cannot fsync (no fsync@openssh.com): batches count once written", self._where)

    async def _complete(self, sftp: Any) -> None:
        if self._file is not None:
            await self._file.close()
            self._file = None
        if self._part is not None:
            await sftp.rename(self._part, self._part.removesuffix(".part"))
            self._part = None
            self.files += 1
