"""The runtime: roles, lifecycle, publishing inbound events and delivering outbound ones."""
