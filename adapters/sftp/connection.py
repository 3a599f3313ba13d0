"""A login to an SFTP server (asyncssh), with the server's host key always checked and nothing
taken from the host the hub runs on (no ~/.ssh keys, agent or config: a pod's image and a
laptop must log in the same way), and asyncssh's failures as the hub's errors: a server that
does not answer is retried (RetryableError), a host key or a login refused is said as the
setup's fault (SftpRefused), retried too (someone fixes it) but never read past."""

from __future__ import annotations

__all__ = ["SftpRefused", "asyncssh", "open_sftp", "sftp_errors"]

import warnings
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

from adapters.sftp.config import SftpServer
from bus.adapter_api import RetryableError

with warnings.catch_warnings():  # asyncssh names DSA's types at import, which cryptography deprecates; the hub never uses DSA
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

_KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


class SftpRefused(RetryableError):
    """The server was reached and refused us, or we refused it: its host key is not the one
    configured, or the login was refused. The setup's fault, said as such."""


def _host_keys(config: SftpServer) -> Any:
    """What asyncssh checks the server's key against: the configured key(s), or the known_hosts file."""
    if config.known_hosts is not None:
        return str(config.known_hosts)
    keys = []
    for line in (config.host_key or "").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not words[0].startswith(_KEY_TYPES):  # "host key-type key" as ssh-keyscan prints it
            words = words[1:]
        keys.append(asyncssh.import_public_key(" ".join(words[:2])))
    return (keys, [], [])


def check_host_key(config: SftpServer) -> None:
    """Raise ValueError when ``host_key`` is not a public key (called when the config loads)."""
    try:
        _host_keys(config)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"host_key is not an SSH public key as ssh-keyscan prints it: {exc}") from None


async def open_sftp(config: SftpServer) -> tuple[Any, Any]:
    """(connection, SFTP client). RetryableError: not reached; SftpRefused: refused either way."""
    where = f"{config.username}@{config.host}:{config.port}"
    keys = None
    if config.private_key is not None:
        passphrase = config.passphrase.get_secret_value() if config.passphrase is not None else None
        try:
            keys = [asyncssh.import_private_key(config.private_key.get_secret_value(), passphrase)]
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise SftpRefused(f"sftp {where}: private_key cannot be read ({exc}); give the key itself, OpenSSH or PEM text") from None
    try:
        connection = await asyncssh.connect(
            config.host,
            config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password is not None else None,
            client_keys=keys,
            known_hosts=_host_keys(config),
            agent_path=None,
            config=None,
            connect_timeout=config.timeout_s,
            login_timeout=config.timeout_s,
            keepalive_interval=max(config.timeout_s, 15.0),  # a connection a firewall dropped is found between polls
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise SftpRefused(
            f"sftp {where}: the server's host key is not the one configured ({exc.reason}): not logged in; if the server's key "
            f"changed on purpose, set host_key to what `ssh-keyscan -p {config.port} {config.host}` prints now"
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise SftpRefused(f"sftp {where}: the login was refused ({exc.reason}); check username, password or private_key") from None
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise RetryableError(f"sftp {where}: not reached: {sftp_errors(exc)}") from None
    try:
        client = await connection.start_sftp_client()
    except (OSError, asyncssh.Error) as exc:
        connection.close()
        raise SftpRefused(f"sftp {where}: logged in, but the server offers no SFTP ({sftp_errors(exc)})") from None
    return connection, client


def sftp_errors(exc: BaseException) -> str:
    """asyncssh's errors say their reason in ``reason``; the rest in their text."""
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
