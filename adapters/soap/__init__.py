"""SOAP family: ``soap`` (outbound, a WSDL operation per event) and ``soap_poll`` (inbound, an
operation called on an interval with a watermark), on zeep for the SOAP and the hub's asyncio
HTTP client for the calls."""
