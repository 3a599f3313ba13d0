"""SFTP: a drop folder of CSV or JSON Lines files on an SFTP server, read into events."""

from adapters.sftp.inbound import SftpInbound

ADAPTERS = (SftpInbound,)
