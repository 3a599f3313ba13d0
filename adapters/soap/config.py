"""Config models of the SOAP family, and what ``bus validate`` checks of them against the WSDL
(their ``contract``)."""

from __future__ import annotations

__all__ = ["BasicAuth", "SoapOutboundConfig", "SoapPollConfig", "SoapSince", "WsseUsernameToken"]

import re
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator

from adapters.http.config import AnswerRules
from adapters.soap.wsdl import Operation, WsdlError, load_operation
from bus.adapter_api import (
    AdapterConfig,
    BodyMap,
    ConfigModel,
    ConfigPath,
    Contract,
    Duration,
    EmitSpec,
    Expression,
    OutboundConfig,
    duration,
)

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class WsseUsernameToken(ConfigModel):
    """WS-Security UsernameToken in the SOAP header (OASIS WSS 1.0), as ERPs and public registries ask."""

    username: str = Field(description="The user name.")
    password: SecretStr = Field(description="The password (use ${ENV} or ${file:...}).")
    digest: bool = Field(default=False, description="Send PasswordDigest (SHA-1 of nonce, created and password) instead of PasswordText.")


class BasicAuth(ConfigModel):
    """HTTP Basic authentication on every call (RFC 7617, credentials in UTF-8). A 401 answer is
    the credentials' fault, not the event's: the call is retried until they are fixed."""

    username: str = Field(description="The user name (no ':', which ends the user name in Basic credentials).")
    password: SecretStr = Field(description="The password (use ${ENV} or ${file:...}).")

    @field_validator("username")
    @classmethod
    def _user(cls, text: str) -> str:
        if ":" in text or not text.isprintable():
            raise ValueError("a Basic user name cannot hold ':' (it ends the user name) or control characters")
        return text

    def header(self) -> dict[str, str]:
        """The Authorization header every call carries."""
        return {"Authorization": aiohttp.encode_basic_auth(self.username, self.password.get_secret_value())}


class _SoapEndpoint(ConfigModel):
    """What both directions share: the WSDL, the operation and how to reach it."""

    wsdl: ConfigPath = Field(
        description="The service's WSDL file, relative to the config file (imports beside it).", examples=["wsdl/ledger.wsdl"]
    )
    operation: str = Field(description="The operation to call.", examples=["PostInvoice"])
    service: str | None = Field(default=None, description="The WSDL's service (default: its first).")
    port: str | None = Field(
        default=None, description="The service's port, which picks the binding: SOAP 1.1 or 1.2 (default: the first port).",
        examples=["LedgerSoap12Port"],
    )  # fmt: skip
    url: str | None = Field(
        default=None, pattern=r"^https?://", description="The endpoint, instead of the address in the WSDL (a test system, a proxy)."
    )
    wsse: WsseUsernameToken | None = Field(default=None, description="WS-Security UsernameToken header.")
    basic_auth: BasicAuth | None = Field(default=None, description="HTTP Basic authentication.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra HTTP headers (values may hold secrets).")
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Per-call timeout: to connect, and for each wait for the answer's next bytes; the whole answer must "
        "also end within six times this (at least 60 s). A timeout is retried.",
    )
    max_answer_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="An answer larger than this (decoded) is not read further and the call counts as failed (retried): a "
        "service answering without end must not take the hub's memory.",
    )

    def call_headers(self) -> dict[str, str]:
        """The HTTP headers of every call: ``headers``, then Basic's Authorization."""
        basic = self.basic_auth.header() if self.basic_auth is not None else {}
        return {k: v.get_secret_value() for k, v in self.headers.items()} | basic

    def bound(self) -> Operation:
        """The operation, bound to its port (the WSDL is read once per change of the file)."""
        token = self.wsse
        return load_operation(
            self.wsdl,
            self.operation,
            service=self.service,
            port=self.port,
            address=self.url,
            username=token.username if token else None,
            password=token.password.get_secret_value() if token else None,
            digest=token.digest if token else False,
        )


def _wsdl_error(exc: WsdlError) -> Contract:
    text = str(exc)
    where = "operation" if "no operation" in text else "port" if "no port" in text else "service" if "no service" in text else "wsdl"
    return Contract(errors=(((where,), text),))


class SoapOutboundConfig(AnswerRules, OutboundConfig, _SoapEndpoint):
    """Call an operation of a WSDL-described service for each event (SOAP 1.1 or 1.2, document/literal)."""

    type: Literal["soap"] = "soap"
    body: BodyMap = Field(
        default=None,
        description="The operation's parameters: element -> expression over the event, a nested block for a complex "
        "type, `$each` for a repeated element. Checked by `bus validate` against the WSDL's types.",
        examples=[{"InvoiceNumber": "invoice_id", "Account": "account", "Amount": "major_units(amount, currency)"}],
    )
    permanent_faults: list[str] = Field(
        default_factory=list,
        description="Faults that dead-letter the event even when their code is Server/Receiver: matched against the fault "
        "code, the detail's element name or text, or a part of the fault string.",
        examples=[["PERIOD_CLOSED", "LedgerFault"]],
    )
    retryable_faults: list[str] = Field(
        default_factory=list,
        description="Faults retried even when their code is Client/Sender (matched the same way): a lock the service calls a client fault.",
    )
    idempotency_header: str = Field(default="Idempotency-Key", description="HTTP header carrying the event id on every call.")

    def contract(self, base_dir: Path) -> Contract:
        try:
            operation = self.bound()
        except WsdlError as exc:
            return _wsdl_error(exc)
        accepts = operation.input_json_schema()
        if self.body is None and accepts.get("required"):
            return Contract(errors=((("body",), f"{self.operation} needs {accepts['required']}, and no body is mapped"),))
        return Contract(body=(("body",), accepts))


class SoapSince(ConfigModel):
    """Incremental polling: each call asks for what changed since the last record seen."""

    param: str = Field(description="The operation's parameter that carries the watermark.", examples=["ChangedSince"])
    field: Expression = Field(description="Expression over a record giving its watermark value.", examples=["ChangedAt"])
    id: Expression | None = Field(
        default=None, description="A record's id, to tell apart records that share a watermark. Default: a hash of the record."
    )
    initial: str | None = Field(default=None, description="Watermark of the very first call; none leaves the parameter out.")
    overlap: Duration = Field(
        default=duration("0s"),
        description="Ask again from this much before the watermark at every call (a time, or epoch seconds or milliseconds): "
        "for services that make a record visible after records changed later (a replica, a record stamped before its "
        "transaction commits). A record in that window not read before is published; one read before is not (remembered "
        "in the position, the newest 5,000). 0s: from the watermark itself.",
        examples=["5m"],
    )


class SoapPollConfig(AdapterConfig, _SoapEndpoint):
    """Call an operation of a WSDL-described service on an interval and publish each new record of
    its result. The position (a watermark and the ids seen at it) is kept in Kafka."""

    type: Literal["soap_poll"] = "soap_poll"
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed parameters of every call.")
    records: str = Field(
        description="Dotted path in the result to the list of records (a repeated element).", examples=["Invoice", "Result.Items.Item"]
    )
    since: SoapSince = Field(description="The watermark: without one every call would publish every record again.")
    interval: Duration = Field(default=duration("1m"), description="Time between the end of one call and the start of the next.")
    retries: int = Field(
        default=5, ge=0, description="Retries of one call on 5xx, timeouts and Server faults; then the next interval tries again."
    )
    emit: EmitSpec = Field(description="How a record becomes a canonical event. Without `id`, the id is a hash of the record.")

    @field_validator("records")
    @classmethod
    def _path(cls, text: str) -> str:
        if not _PATH.fullmatch(text):
            raise ValueError(f"records must be a dotted path of element names, not {text!r}")
        return text

    def contract(self, base_dir: Path) -> Contract:
        try:
            operation = self.bound()
        except WsdlError as exc:
            return _wsdl_error(exc)
        takes = operation.input_json_schema().get("properties") or {}
        unknown = [p for p in (*self.params, self.since.param) if p not in takes]
        if unknown:
            return Contract(errors=((("params",), f"{self.operation} takes no parameter {unknown[0]!r} (it takes {', '.join(takes)})"),))
        found: Any = operation.output_json_schema()
        for name in self.records.split("."):
            found = (found.get("properties") or {}).get(name) if isinstance(found, dict) else None
        if not isinstance(found, dict) or found.get("type") != "array":
            return Contract(errors=((("records",), f"the result of {self.operation} has no repeated element at {self.records}"),))
        return Contract(payload=found["items"])
