"""HTTP family: ``http_webhook`` (inbound, POSTed JSON) and ``http`` (outbound, a call per event)."""
