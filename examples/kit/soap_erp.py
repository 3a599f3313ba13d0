"""A local stand-in for an ERP's SOAP ledger service, described by shop-orders-to-soap-erp/ledger.wsdl.

It behaves as such services do where the hub depends on it:
- ``GET /soap?wsdl`` serves the WSDL with this server's addresses;
- ``POST /soap`` speaks SOAP 1.1 (text/xml, the SOAPAction header must name the operation; a
  fault is HTTP 500 with faultcode/faultstring/detail), ``POST /soap12`` SOAP 1.2
  (application/soap+xml with the action parameter; Code/Value, Reason/Text, Detail; a Sender
  fault is HTTP 400, a Receiver fault 500);
- WS-Security UsernameToken (PasswordText or PasswordDigest as OASIS WSS 1.0 defines it) when
  ``username`` is set, a wsse:FailedAuthentication fault otherwise;
- ``PostInvoice``: an unknown account is a Client/Sender fault (LedgerFault UNKNOWN_ACCOUNT);
  an issue date in a closed period a Server/Receiver fault (LedgerFault PERIOD_CLOSED), as ERPs
  send business rules they check late; ``fail_next`` answers that many calls 503 with no
  envelope, as a load balancer does;
- ``ListInvoices``: invoices changed since ``ChangedSince`` (inclusive), oldest first (or in the order they
  were made: ``lists_in_id_order``).

Requests are parsed with entities and network access off.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree

from examples.kit.standin import serve

WSDL = Path(__file__).resolve().parents[1] / "shop-orders-to-soap-erp" / "ledger.wsdl"
TNS = "urn:example:ledger"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class _Fault(Exception):
    def __init__(self, sender: bool, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.sender, self.text, self.code = sender, text, code


@dataclass
class SoapLedger:
    accounts: set[str] = field(default_factory=lambda: {"4000", "4100", "4200"})
    closed_periods: set[str] = field(default_factory=set)
    held_accounts: set[str] = field(default_factory=set)  # posted on hold: "HELD" in the reply, no fault (as some ERPs do)
    lists_in_id_order: bool = False  # ListInvoices in the order invoices were made, not by ChangedAt (as many ERPs do)
    username: str | None = None
    password: str = ""
    basic: tuple[str, str] | None = None  # HTTP Basic credentials every call must carry (UTF-8), when set
    fail_next: int = 0
    invoices: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # version, operation, outcome of every call
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/soap"

    def wsdl_text(self) -> str:
        return (
            WSDL.read_text()
            .replace("http://ledger.example.com/soap12", f"{self.url}12")
            .replace("http://ledger.example.com/soap", self.url)
        )

    def add_invoice(self, number: str, account: str, amount: str, changed_at: str) -> None:
        self.invoices.append(
            {"InvoiceId": f"INV-{len(self.invoices) + 1}", "InvoiceNumber": number, "Account": account,
             "Amount": amount, "Currency": "EUR", "ChangedAt": changed_at}
        )  # fmt: skip

    # -- the service ---------------------------------------------------------------------------
    @staticmethod
    def _check_action(action: str, operation: str) -> None:
        if action != f"{TNS}/{operation}":
            raise _Fault(True, f"the SOAP action {action!r} does not name {operation}")

    def _authenticate(self, envelope: Any, ns: str) -> None:
        if self.username is None:
            return
        token = envelope.find(f"{{{ns}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            raise _Fault(True, "no UsernameToken in the Security header", "wsse:FailedAuthentication")
        user = token.findtext(f"{{{WSSE}}}Username")
        password = token.find(f"{{{WSSE}}}Password")
        given = password.text if password is not None else None
        if password is not None and password.get("Type") == DIGEST:
            nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
            created = token.findtext(f"{{{WSU}}}Created") or ""
            expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()).decode()
        else:
            expected = self.password
        if user != self.username or given != expected:
            raise _Fault(True, "the security token could not be authenticated", "wsse:FailedAuthentication")

    def _post_invoice(self, request: Any) -> Any:
        values = {child.tag.split("}")[1]: child.text for child in request}
        account, date = values.get("Account") or "", values.get("IssueDate") or ""
        if account not in self.accounts:
            raise _Fault(True, f"Account {account} does not exist", "UNKNOWN_ACCOUNT")
        if date[:7] in self.closed_periods:
            raise _Fault(False, f"Period {date[:7]} is closed for posting", "PERIOD_CLOSED")
        if account in self.held_accounts:
            answer = etree.Element(f"{{{TNS}}}PostInvoiceResponse")
            etree.SubElement(answer, f"{{{TNS}}}InvoiceId").text = ""
            etree.SubElement(answer, f"{{{TNS}}}Status").text = "HELD"
            return answer
        amount = Decimal(values["Amount"] or "0")
        self.add_invoice(values["InvoiceNumber"] or "", account, str(amount), f"2026-07-01T00:00:{len(self.invoices):02d}Z")
        self.invoices[-1].update(Memo=values.get("Memo"), Lines=len(request.findall(f"{{{TNS}}}Line")), IssueDate=date)
        answer = etree.Element(f"{{{TNS}}}PostInvoiceResponse")
        etree.SubElement(answer, f"{{{TNS}}}InvoiceId").text = self.invoices[-1]["InvoiceId"]
        etree.SubElement(answer, f"{{{TNS}}}Status").text = "POSTED"
        return answer

    def _list_invoices(self, request: Any) -> Any:
        since = request.findtext(f"{{{TNS}}}ChangedSince") or ""
        answer = etree.Element(f"{{{TNS}}}ListInvoicesResponse")
        changed = [i for i in self.invoices if i["ChangedAt"] >= since]
        for invoice in changed if self.lists_in_id_order else sorted(changed, key=lambda i: i["ChangedAt"]):
            element = etree.SubElement(answer, f"{{{TNS}}}Invoice")
            for name in ("InvoiceId", "InvoiceNumber", "Account", "Amount", "Currency", "ChangedAt"):
                etree.SubElement(element, f"{{{TNS}}}{name}").text = invoice[name]
        return answer

    async def _handle(self, request: web.Request, ns: str) -> web.Response:
        version = "1.1" if ns == SOAP11 else "1.2"
        content_type = request.headers.get("Content-Type", "")
        wanted = "text/xml" if ns == SOAP11 else "application/soap+xml"
        if not content_type.startswith(wanted):
            return web.Response(status=415, text=f"SOAP {version} wants {wanted}")
        if self.basic is not None and request.headers.get("Authorization") != self._basic_expected():
            self.calls.append({"version": version, "outcome": 401})
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ledger", charset="UTF-8"'})
        if self.fail_next:
            self.fail_next -= 1
            self.calls.append({"version": version, "outcome": 503})
            return web.Response(status=503, text="<html><body>Service Unavailable</body></html>", content_type="text/html")
        envelope = etree.fromstring(await request.read(), _PARSER)
        call = envelope.find(f"{{{ns}}}Body")[0]
        operation = call.tag.split("}")[1]
        action = request.headers.get("SOAPAction", "").strip('"') if ns == SOAP11 else content_type.partition('action="')[2].rstrip('"')
        try:
            self._check_action(action, operation)
            self._authenticate(envelope, ns)
            answer = {"PostInvoice": self._post_invoice, "ListInvoices": self._list_invoices}[operation](call)
        except _Fault as fault:
            self.calls.append({"version": version, "operation": operation, "outcome": fault.code or "fault"})
            status = 500 if ns == SOAP11 or not fault.sender else 400
            return web.Response(status=status, body=self._fault(ns, fault), content_type=wanted)
        asked = {"since": call.findtext(f"{{{TNS}}}ChangedSince") or ""} if operation == "ListInvoices" else {}
        self.calls.append({"version": version, "operation": operation, "outcome": "ok", **asked})
        return web.Response(body=self._envelope(ns, answer), content_type=wanted)

    def _basic_expected(self) -> str:
        assert self.basic is not None
        return "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()

    @staticmethod
    def _envelope(ns: str, content: Any) -> bytes:
        envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={"soap": ns, "l": TNS})
        etree.SubElement(envelope, f"{{{ns}}}Body").append(content)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))

    def _fault(self, ns: str, fault: _Fault) -> bytes:
        element = etree.Element(f"{{{ns}}}Fault")
        security = fault.code is not None and fault.code.startswith("wsse:")
        if ns == SOAP11:  # WSS 1.0: a security fault's faultcode is the wsse: QName itself
            code_text = fault.code if security else f"soap:{'Client' if fault.sender else 'Server'}"
            etree.SubElement(element, "faultcode", nsmap={"wsse": WSSE}).text = code_text
            etree.SubElement(element, "faultstring").text = fault.text
            detail = etree.SubElement(element, "detail")
        else:
            code = etree.SubElement(element, f"{{{ns}}}Code")
            etree.SubElement(code, f"{{{ns}}}Value").text = f"soap:{'Sender' if fault.sender else 'Receiver'}"
            if security:  # SOAP 1.2: the security fault as the Subcode
                subcode = etree.SubElement(code, f"{{{ns}}}Subcode")
                etree.SubElement(subcode, f"{{{ns}}}Value", nsmap={"wsse": WSSE}).text = fault.code
            reason = etree.SubElement(element, f"{{{ns}}}Reason")
            etree.SubElement(reason, f"{{{ns}}}Text", {"{http://www.w3.org/XML/1998/namespace}lang": "en"}).text = fault.text
            detail = etree.SubElement(element, f"{{{ns}}}Detail")
        if fault.code and not security:
            ledger = etree.SubElement(detail, f"{{{TNS}}}LedgerFault")
            etree.SubElement(ledger, f"{{{TNS}}}Code").text = fault.code
            etree.SubElement(ledger, f"{{{TNS}}}Reason").text = fault.text
        return self._envelope(ns, element)

    async def _wsdl(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.wsdl_text(), content_type="text/xml")

    async def start(self) -> SoapLedger:
        app = web.Application()

        async def soap11(request: web.Request) -> web.Response:
            return await self._handle(request, SOAP11)

        async def soap12(request: web.Request) -> web.Response:
            return await self._handle(request, SOAP12)

        app.router.add_get("/soap", self._wsdl)
        app.router.add_post("/soap", soap11)
        app.router.add_post("/soap12", soap12)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
