"""WSDLs with zeep: load a service description once, build an operation's envelope from a dict,
read an answer (a result or a fault), and say in JSON Schema what an operation takes and gives.

zeep does the SOAP (1.1 and 1.2 bindings, document/literal, XSD types, WS-Security headers);
the hub only asks it for bytes to send and hands it the bytes it got back, so the calls go
through the hub's own asyncio HTTP client, not zeep's blocking transport. WSDLs are parsed
with DTDs, entities and external references forbidden, and never fetched from the network by
the parse: the file the config names, and the imports beside it.
"""

from __future__ import annotations

__all__ = ["Answer", "Fault", "FaultError", "Operation", "WsdlError", "load_operation"]

from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any

import zeep
from lxml import etree
from zeep.exceptions import Fault as ZeepFault
from zeep.exceptions import TransportError, ValidationError, XMLParseError
from zeep.helpers import serialize_object
from zeep.settings import Settings
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

_SETTINGS = Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True, xml_huge_tree=False)
_SIMPLE: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "normalizedString": {"type": "string"},
    "token": {"type": "string"},
    "anyURI": {"type": "string"},
    "boolean": {"type": "boolean"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "decimal": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"x-bus-type": "decimal"}]},
    "date": {"anyOf": [{"type": "string"}, {"x-bus-type": "date"}, {"x-bus-type": "timestamp"}]},
    "dateTime": {"anyOf": [{"type": "string"}, {"x-bus-type": "timestamp"}]},
}
_SECURITY_FAULTS = {"FailedAuthentication", "InvalidSecurity", "InvalidSecurityToken", "FailedCheck", "SecurityTokenUnavailable"}
_INTEGERS = {"int", "integer", "long", "short", "byte", "nonNegativeInteger", "positiveInteger", "unsignedInt", "unsignedLong"}


class WsdlError(ValueError):
    """A WSDL that cannot be read, or that lacks what the config names."""


class _NoNetwork(Transport):
    """zeep's transport for loading the WSDL: local files only, never a URL."""

    def load(self, url: str) -> bytes:
        if "://" in url and not url.startswith("file://"):
            raise WsdlError(f"the WSDL imports {url}: save it beside the WSDL and import it by a relative path")
        loaded: bytes = super().load(url)
        return loaded


@dataclass(frozen=True)
class Fault:
    """A SOAP fault: its code's local name (Client, Server, Sender, Receiver...), text, and the
    local name of its detail's first element (the WSDL's declared fault, if any)."""

    code: str
    text: str
    detail: str
    detail_text: str = ""
    subcodes: tuple[str, ...] = ()  # SOAP 1.2 Subcode values (wsse:FailedAuthentication...)

    def __str__(self) -> str:
        said = " ".join(self.detail_text.split())[:200]
        return f"SOAP fault {self.code}: {self.text}" + (f" ({self.detail}: {said})" if self.detail else "")

    def matches(self, pattern: str) -> bool:
        """A config's fault pattern: the code, the detail element's name, a word of its text, or part of the fault string."""
        return pattern in (self.code, self.detail, *self.subcodes) or pattern in self.detail_text.split() or pattern in self.text

    @property
    def about_credentials(self) -> bool:
        """A WS-Security fault (OASIS WSS 1.0): the credentials are wrong, not the event; fixing
        them makes the same call succeed."""
        return bool({self.code, *self.subcodes} & _SECURITY_FAULTS)

    @property
    def from_the_request(self) -> bool:
        """Client (1.1) or Sender (1.2): the request was at fault, and the same request fails again."""
        return self.code in ("Client", "Sender") or self.code.startswith("Client.")


@dataclass(frozen=True)
class Answer:
    """What zeep's reply parser reads from an answer (the shape of a requests response)."""

    status_code: int
    content: bytes
    headers: dict[str, str]
    encoding: str = "utf-8"


def _local(name: Any) -> str:
    text = str(getattr(name, "text", name) or "")
    return text.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


class Operation:
    """One operation of one port of a WSDL, bound: envelopes out, results or faults in."""

    def __init__(self, client: zeep.Client, binding: Any, name: str, address: str) -> None:
        self.client, self.binding, self.name, self.address = client, binding, name, address
        self.operation = binding.get(name)
        self.soap_version = "1.2" if type(binding).__name__ == "Soap12Binding" else "1.1"

    def envelope(self, values: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The request's bytes and HTTP headers (Content-Type, SOAPAction), WS-Security applied.
        A value the operation cannot take is a ValueError naming it."""
        try:
            envelope, headers = self.binding._create(self.name, (), values, client=self.client)
        except (ValidationError, TypeError) as exc:
            raise ValueError(f"{self.name} cannot be built from the mapped values: {exc}") from exc
        return etree.tostring(envelope, xml_declaration=True, encoding="utf-8"), dict(headers)

    def reply(self, answer: Answer) -> Any:
        """The operation's result as plain dicts and lists; Fault for a SOAP fault; ValueError
        for an answer that is no SOAP envelope."""
        try:
            result = self.binding.process_reply(self.client, self.operation, answer)
        except ZeepFault as exc:
            if exc.code is None:  # zeep's word for an answer with no Fault element (an HTML error page)
                raise ValueError(f"not a SOAP answer: {exc.message}") from exc
            detail = exc.detail[0] if etree.iselement(exc.detail) and len(exc.detail) else None
            name, text = (_local(detail.tag), " ".join(detail.itertext())) if detail is not None else ("", "")
            subcodes = tuple(_local(c) for c in exc.subcodes or ())
            raise FaultError(Fault(_local(exc.code), str(exc.message or ""), name, text, subcodes)) from exc
        except (TransportError, XMLParseError, etree.XMLSyntaxError) as exc:
            raise ValueError(f"not a SOAP answer: {exc}") from exc
        plain = _plain(serialize_object(result, dict))
        # zeep hands back the value of a result element's only child unwrapped (a list of Invoice
        # for ListInvoicesResponse); wrap it again, so paths read the result as the WSDL shows it.
        body = self.operation.output.body
        children = [name for name, _ in getattr(getattr(body, "type", None), "elements", None) or ()]
        if len(children) == 1 and not (isinstance(plain, dict) and set(plain) == set(children)):
            return {children[0]: plain}
        return plain

    # -- contracts, for bus validate ------------------------------------------------------------
    def input_json_schema(self) -> dict[str, Any]:
        body = self.operation.input.body
        schema = _element_type(body.type, 0) if body is not None else {"type": "object", "properties": {}}
        return {**schema, "title": f"the input of {self.name}"}

    def output_json_schema(self) -> dict[str, Any]:
        body = self.operation.output.body
        schema = _element_type(body.type, 0, result=True) if body is not None else {"type": "object", "properties": {}}
        return {**schema, "title": f"the result of {self.name}"}


def _plain(value: Any) -> Any:
    """A result as a document, as JSON would carry it: dates and times as ISO 8601 text (so a
    watermark goes back into the next call as the service wrote it), decimals kept exact."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


class FaultError(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(str(fault))
        self.fault = fault


def _element_type(kind: Any, depth: int, *, result: bool = False) -> dict[str, Any]:
    """The JSON Schema of an XSD type; ``result``: as ``Operation.reply`` gives it (dates as text)."""
    if depth > 32:
        return {}
    elements = getattr(kind, "elements", None)
    if elements is not None and (elements or not hasattr(kind, "accepted_types")):
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, element in elements:
            item = _element_type(element.type, depth + 1, result=result)
            repeated = element.max_occurs == "unbounded" or (isinstance(element.max_occurs, int) and element.max_occurs > 1)
            properties[name] = {"type": "array", "items": item} if repeated else item
            if element.min_occurs and not getattr(element, "nillable", False):
                required.append(name)
        title = _local(getattr(kind, "qname", None)) or "element"
        return {
            "title": f"XSD type {title}",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
    return _simple(kind, result)


def _simple(kind: Any, result: bool) -> dict[str, Any]:
    """An XSD simple type by its built-in name, or its base's for a restriction (zeep makes a
    restriction a subclass of its base: CurrencyCode is a String)."""
    for candidate in type(kind).__mro__:
        name = _local(candidate.__dict__.get("_default_qname"))
        if result and name in ("date", "dateTime", "time"):
            return {"type": "string"}
        if name in _SIMPLE:
            return dict(_SIMPLE[name])
        if name in _INTEGERS:
            return {"type": "integer"}
    return {}  # anyType, a union, a list type: not checked


@lru_cache(maxsize=16)
def _client(path: str, modified: float, username: str | None, password: str | None, digest: bool) -> zeep.Client:
    wsse = UsernameToken(username, password, use_digest=digest) if username is not None else None
    return zeep.Client(path, settings=_SETTINGS, transport=_NoNetwork(), wsse=wsse)


def load_operation(
    wsdl: Path,
    operation: str,
    *,
    service: str | None = None,
    port: str | None = None,
    address: str | None = None,
    username: str | None = None,
    password: str | None = None,
    digest: bool = False,
) -> Operation:
    """The named operation of a WSDL file's service and port (the first of each by default), or
    WsdlError saying what the WSDL has instead."""
    try:
        client = _client(str(wsdl), wsdl.stat().st_mtime, username, password, digest)
    except OSError as exc:
        raise WsdlError(f"cannot read the WSDL {wsdl}: {exc.strerror or exc}") from exc
    except WsdlError:
        raise
    except Exception as exc:
        raise WsdlError(f"{wsdl} is not a WSDL zeep can use: {exc}") from exc
    services = client.wsdl.services
    if not services:
        raise WsdlError(f"{wsdl} declares no service")
    chosen = services.get(service) if service else next(iter(services.values()))
    if chosen is None:
        raise WsdlError(f"{wsdl} has no service {service!r} (it has {', '.join(services)})")
    ports = chosen.ports
    bound = ports.get(port) if port else next(iter(ports.values()), None)
    if bound is None:
        raise WsdlError(f"service {chosen.name} has no port {port!r} (it has {', '.join(ports)})")
    names = list(bound.binding._operations)
    if operation not in names:
        raise WsdlError(f"port {bound.name} has no operation {operation!r} (it has {', '.join(names)})")
    return Operation(client, bound.binding, operation, address or bound.binding_options.get("address", ""))
