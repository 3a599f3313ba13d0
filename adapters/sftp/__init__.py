"""SFTP: a drop folder of CSV or JSON Lines files on an SFTP server read into events, and rolling
JSON Lines or CSV files written to one from events."""

from adapters.sftp.inbound import SftpInbound
from adapters.sftp.outbound import SftpOutbound

# One entry point for the family: `type: sftp` under inbound reads a folder, under outbound writes one.
ADAPTERS = (SftpInbound, SftpOutbound)
