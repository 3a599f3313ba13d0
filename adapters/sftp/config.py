"""Config models of the sftp adapters: a drop folder on an SFTP server in, rolling files written to one out."""

from __future__ import annotations

__all__ = ["SftpInboundConfig", "SftpOutboundConfig", "SftpServer"]

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.file.config import DropFolderConfig, RollingFilesConfig
from bus.adapter_api import ConfigModel, ConfigPath, Duration, duration


class SftpServer(ConfigModel):
    """Where the SFTP server is and how the hub logs in. The server's host key is always checked:
    give it (`host_key`, what `ssh-keyscan -p PORT HOST` prints) or a `known_hosts` file."""

    host: str = Field(description="The SFTP server.", examples=["sftp.partner.example"])
    port: int = Field(default=22, ge=1, le=65535, description="Its SSH port.")
    username: str = Field(description="The account the hub logs in as.", examples=["acme-hub"])
    password: SecretStr | None = Field(default=None, description="Password login (use ${ENV} or ${file:...}).")
    private_key: SecretStr | None = Field(
        default=None,
        description="Key login: the private key itself, OpenSSH or PEM text (use ${file:/run/secrets/sftp_key}).",
        examples=["${file:/run/secrets/partner_sftp_key}"],
    )
    passphrase: SecretStr | None = Field(default=None, description="The private key's passphrase, if it has one.")
    host_key: str | None = Field(
        default=None,
        description="The server's public host key(s), one per line, as `ssh-keyscan` prints them (with or without the host "
        "in front): `ssh-ed25519 AAAAC3...`. A server that shows another key is not logged in to.",
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIJLSk2XDmeizOMmPa+u1xp21ely5rtgHn9NsONHSEgD"],
    )
    known_hosts: ConfigPath | None = Field(
        default=None, description="Or a known_hosts file that names the server (relative to the config's folder or absolute)."
    )
    timeout_s: float = Field(default=30.0, gt=0, description="How long connecting, logging in and each file operation may take.")

    @model_validator(mode="after")
    def _check_server(self) -> SftpServer:
        if self.password is None and self.private_key is None:
            raise ValueError("give `password` or `private_key`: the hub has no other way to log in")
        if self.host_key is None and self.known_hosts is None:
            raise ValueError(
                "give the server's `host_key` (what `ssh-keyscan -p PORT HOST` prints) or a `known_hosts` file: without one a "
                "server in the middle would be logged in to and given every file"
            )
        if self.host_key is not None and self.known_hosts is not None:
            raise ValueError("give `host_key` or `known_hosts`, not both")
        from adapters.sftp.connection import check_host_key  # asyncssh reads the key; it imports this module

        check_host_key(self)
        return self


class SftpInboundConfig(SftpServer, DropFolderConfig):
    """A drop folder on an SFTP server: every file that appears in `path` (and stops changing) is
    fetched, read row by row into events like the `file` inbound's, and moved on the server to
    `done/` (or `failed/`, `skipped/`) beside a manifest once every row is on Kafka or on the inbound
    dead-letter topic with its line number."""

    type: Literal["sftp"] = "sftp"
    path: str = Field(description="The folder on the server (absolute, or from the account's home).", examples=["/outbound/orders"])
    poll_interval: Duration = Field(default=duration("30s"), description="How often the folder is looked at.")
    settle: Duration = Field(
        default=duration("10s"),
        description="A file must show the same size and time this long, over two looks, before it is fetched (still being "
        "uploaded). The server's clock is not used.",
    )
    after: Literal["move", "delete", "keep"] = Field(
        default="move",
        description="What is done with a file once read. move: to done/ (failed/, skipped/) on the server beside a "
        "manifest; the account must be able to rename there. delete: removed from the server (an outbox the partner "
        "empties by hand). keep: left where it is, for an account that may only read (a bank's outbox its own job "
        "clears): what was read, by name, size and time, is remembered on the hub's checkpoint topic, so each file is "
        "read once; a file changed in place is read again.",
    )
    max_file_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="A larger file is not fetched (each is fetched into a temporary file first): moved to failed/ with the reason.",
    )


class SftpOutboundConfig(SftpServer, RollingFilesConfig):
    """Rolling JSON Lines or CSV files written to a folder on an SFTP server, as the `file` outbound
    writes them to a local one: each as `<prefix>-<UTC time>-<pid>-<n>.<ext>.part` until it rolls,
    then renamed, so the partner only ever sees complete files. An event counts as delivered once
    its batch is written (and, with `fsync`, on the server's disk)."""

    type: Literal["sftp"] = "sftp"
    path: str = Field(description="The folder on the server files are written to (made if missing).", examples=["/inbound/payments"])
    fsync: bool = Field(
        default=True,
        description="Have the server fsync each batch before its events count as delivered (OpenSSH's fsync@openssh.com; "
        "a server without it is said once, and written without).",
    )
