"""An SFTP server that lists names no file can have: asyncssh's own server (real SSH, real SFTP)
over a folder of the test's, whose directory listings add names holding '/' (``../outside.csv``,
``inner/deep.csv``), as a buggy or hostile partner server may. OpenSSH's server cannot list
such a name: no file system holds one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.sftp_private import asyncssh  # imported there without cryptography's warnings


@dataclass
class HostileServer:
    port: int
    private_key: str
    host_key: str
    root: Path  # what the client sees as "/"

    def config(self, path: str, **extra: object) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "username": "partner",
            "private_key": self.private_key,
            "host_key": self.host_key,
            "path": path,
            **extra,
        }


def _listing_with(extra: Iterable[bytes]) -> type[asyncssh.SFTPServer]:
    class Listing(asyncssh.SFTPServer):
        async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
            async for entry in super().scandir(path):
                yield entry
            real = Path(self.map_path(path).decode())
            for name in extra:
                target = (real / name.decode()).resolve()
                if target.is_file():  # what the name would reach: listed with that file's attributes
                    yield asyncssh.SFTPName(name, attrs=asyncssh.SFTPAttrs.from_local(target.stat()))

    return Listing


@asynccontextmanager
async def hostile_sftp(root: Path, names: Iterable[bytes]) -> AsyncIterator[HostileServer]:
    host, client = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    listing = _listing_with(list(names))

    def sftp(chan: Any) -> asyncssh.SFTPServer:
        return listing(chan, chroot=str(root).encode())

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host],
        authorized_client_keys=asyncssh.import_authorized_keys(client.export_public_key().decode()),
        sftp_factory=sftp,
        allow_scp=False,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        yield HostileServer(port, client.export_private_key().decode(), host.export_public_key().decode().strip(), root)
    finally:
        server.close()
        await server.wait_closed()
