"""Files: a drop folder of CSV or JSON Lines files read into events (batch ETL), and rolling
JSON Lines or CSV files written from events."""

from adapters.file.inbound import FileInbound
from adapters.file.outbound import FileOutbound

# One entry point for the family: `type: file` under inbound reads a folder, under outbound writes one.
ADAPTERS = (FileInbound, FileOutbound)
