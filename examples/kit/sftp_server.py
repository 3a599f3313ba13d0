"""A stand-in for a partner's SFTP server (a bank's, an ERP's file interface), where the hub
depends on it: SSH with a host key of its own and one account that logs in with a key, serving a
folder of this machine as the account's whole file system (asyncssh's SFTP server, chrooted).

What the hub meets as it would at a real server: the host key it must have been given
(`host_key`, what `ssh-keyscan` prints), key login (and password login when the stand-in is given
a password), files appearing while it polls, and renames that fail when the target name exists
(the adapter keeps both names). The tests of the sftp adapters themselves run against OpenSSH's
sshd (tests/support/sftp_private.py), and against this server for password login, which an
unprivileged sshd cannot check; a recipe runs with what its venv has.
"""

from __future__ import annotations

__all__ = ["SftpStandIn"]

import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

from bus.ports import free_port

with warnings.catch_warnings():  # asyncssh names DSA's types at import, which cryptography deprecates
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh


class SftpStandIn:
    def __init__(self, username: str, folders: tuple[str, ...] = (), *, password: str | None = None) -> None:
        self.username = username
        self.password = password  # also accepted, when given (key login is always)
        self.root = Path(tempfile.mkdtemp(prefix=f"sftp-{username}-"))
        for folder in folders:
            (self.root / folder.strip("/")).mkdir(parents=True, exist_ok=True)
        self._host = asyncssh.generate_private_key("ssh-ed25519")
        self._client = asyncssh.generate_private_key("ssh-ed25519")
        self.port = 0
        self._server: Any = None

    @property
    def host_key(self) -> str:
        """The server's public key, as ``ssh-keyscan`` prints it (without the host)."""
        return str(self._host.export_public_key().decode().strip())

    @property
    def private_key(self) -> str:
        """The key the account accepts (OpenSSH text), for the hub's ``private_key``."""
        return str(self._client.export_private_key().decode())

    def path(self, remote: str) -> Path:
        """Where a path on the server is on this machine."""
        return self.root / remote.strip("/")

    def drop(self, remote: str, data: bytes) -> Path:
        """A file as the partner uploads it: written under a hidden name, then renamed (a
        partner's upload is seen whole or not at all, as most upload tools do)."""
        target = self.path(remote)
        part = target.with_name(f".{target.name}.uploading")
        part.write_bytes(data)
        part.rename(target)
        return target

    async def start(self) -> SftpStandIn:
        root, username, accepted, password = bytes(self.root), self.username, self._client.convert_to_public(), self.password
        self.port = free_port()

        class Account(asyncssh.SSHServer):  # one account, by key (and by password when one is set)
            def begin_auth(self, name: str) -> bool:
                return True  # authentication is required

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, name: str, key: Any) -> bool:
                return bool(name == username and key.public_data == accepted.public_data)

            def password_auth_supported(self) -> bool:
                return password is not None

            def validate_password(self, name: str, given: str) -> bool:
                return name == username and password is not None and secrets.compare_digest(given, password)

        def sftp(chan: Any) -> Any:
            return asyncssh.SFTPServer(chan, chroot=root)

        self._server = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[self._host],
            server_factory=Account,
            sftp_factory=sftp,
            allow_scp=False,
        )
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
