"""An SFTP server of the test's own: OpenSSH's sshd (Debian's package, unpacked into .tools/ by
`make test`) with its internal SFTP server, on a free port, logging in one account by key (or by
password where PAM lets an unprivileged sshd check it). sshd refuses to run as root without its
privilege-separation user, so when the tests run as root it runs as ``nobody`` and logs ``nobody``
in; otherwise it runs as, and logs in, the user running the tests. The drop folder it serves
belongs to that account."""

from __future__ import annotations

import getpass
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.utils import CryptographyDeprecationWarning

from bus.ports import free_port
from tests.support.private_server import launch, server_folder, stop_server, wait_listening
from tests.support.tools import tool

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh


@dataclass
class SftpServer:
    port: int
    username: str
    private_key: str  # OpenSSH text of the key the account accepts
    host_key: str  # the server's public key, as ssh-keyscan prints it (without the host)
    folder: Path  # the account's drop folder, also its path on the server
    owner: tuple[int, int]  # the account's uid and gid: files a test puts in the folder are given to it

    def put(self, name: str, data: bytes, *, into: Path | None = None) -> Path:
        """A file as a partner uploads it, owned by the account (which moves it out when done)."""
        path = (into or self.folder) / name
        path.write_bytes(data)
        os.chown(path, *self.owner)
        return path

    def config(self, **extra: object) -> dict[str, object]:
        """The connection part of an `sftp` adapter's config."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "username": self.username,
            "private_key": self.private_key,
            "host_key": self.host_key,
            "path": str(self.folder),
            **extra,
        }


@contextmanager
def sftp_server() -> Iterator[SftpServer]:
    binary = Path(tool("sshd"))
    as_root = os.geteuid() == 0
    user = "nobody" if as_root else getpass.getuser()
    folder, as_user = server_folder("bus-sftp-", user)
    owner = (os.stat(folder).st_uid, os.stat(folder).st_gid)
    # sshd's binary copied beside its files: the account may not enter the checkout.
    shutil.copy2(binary, folder / "sshd")
    host, client = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    host.write_private_key(folder / "host_key")
    (folder / "authorized_keys").write_bytes(client.export_public_key())
    drop = folder / "drop"
    drop.mkdir()
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        # PAM: an unprivileged sshd cannot read the shadow file, and without PAM it takes a locked password as a locked account.
        "UsePAM yes\nStrictModes no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    for path in folder.rglob("*"):
        os.chown(path, *owner)
    (folder / "host_key").chmod(0o600)
    # sshd re-executes itself, so it is started by its absolute path.
    server = launch([*as_user, str(folder / "sshd"), "-D", "-e", "-f", str(folder / "sshd_config")], folder)
    try:
        wait_listening(server, port, "sshd", folder)
        yield SftpServer(
            port=port,
            username=user,
            private_key=client.export_private_key().decode(),
            host_key=host.export_public_key().decode().strip(),
            folder=drop,
            owner=owner,
        )
    finally:
        stop_server(server, folder)
