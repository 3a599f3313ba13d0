"""``soap``: call an operation of a WSDL-described service for each event.

The body is built from the event with the expression language (``body:`` as for ``http``), then
zeep makes the envelope the WSDL's binding asks for (SOAP 1.1 or 1.2, document/literal, the
SOAPAction, a WS-Security UsernameToken) and reads the answer; the call itself goes through the
hub's asyncio HTTP client.

What an answer means:
- a result: delivered, unless ``refused_when`` (dead letter) or ``retry_when`` (retry) holds over
  it: a service that refuses without a fault (a ``Status`` of ``HELD``);
- a fault whose code is Client (1.1) or Sender (1.2): the request was at fault, and the same
  request fails again, so the event is dead-lettered with the fault's text and detail;
- a fault whose code is Server or Receiver, or a WS-Security fault (FailedAuthentication:
  the credentials are wrong, not the event): retried under the ``delivery:`` policy.
  ``permanent_faults`` and ``retryable_faults`` turn either way by the fault's code, its
  detail's element or text, or its string (a business fault a service sends as a Server
  fault, such as a closed accounting period);
- no envelope: by the HTTP status, as ``http`` does (5xx, 408, 425, 429 and timeouts retried,
  other 4xx dead-lettered);
- values the operation cannot take (a missing required element): dead-lettered before any call.
"""

from __future__ import annotations

__all__ = ["SoapOutbound"]

import asyncio
from typing import Any, ClassVar

import aiohttp

from adapters.http.answers import AnswerChecks
from adapters.http.bounded import AnswerTooLarge, answer_budget, read_body_bounded
from adapters.soap.config import SoapOutboundConfig
from adapters.soap.wsdl import Answer, Fault, FaultError, Operation, WsdlError
from bus.adapter_api import Body, Context, Event, Outbound, PermanentError, RetryableError, proxy_options

_RETRYABLE = {408, 425, 429}


class SoapOutbound(Outbound[SoapOutboundConfig]):
    Config: ClassVar[type[SoapOutboundConfig]] = SoapOutboundConfig
    summary: ClassVar[str] = "Call a WSDL operation per event (SOAP 1.1/1.2, document/literal, WS-Security); faults classified."

    def __init__(self, config: SoapOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._operation: Operation | None = None
        self._client: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}  # the environment's proxy for the service (bus.http_clients.proxy_options)
        self._proxy_headers: dict[str, str] = {}
        self._headers = config.call_headers()
        self._answer_checks = AnswerChecks(retry_when=config.retry_when, refused_when=config.refused_when)

    async def start(self) -> None:
        if self._operation is None:
            try:  # zeep parses the WSDL and its XSDs: off the event loop
                self._operation = await asyncio.to_thread(self.config.bound)
            except WsdlError as exc:
                raise RetryableError(str(exc)) from exc
        if self._client is None:
            self._proxy, self._proxy_headers = proxy_options(self._operation.address)  # read once: a SOAP service is one address
            timeout = self.config.timeout_s
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=answer_budget(timeout), connect=timeout, sock_connect=timeout, sock_read=timeout),
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def deliver(self, event: Event) -> None:
        operation, client = self._operation, self._client
        if operation is None or client is None:
            raise RetryableError(f"soap outbound {self.config.name} is not started")
        try:
            body, headers = operation.envelope(self._body.render(event))
        except ValueError as exc:  # the event's values do not fit the operation: no call can succeed
            raise PermanentError(str(exc)) from exc
        headers = {**self._headers, **headers, self.config.idempotency_header: event.id, **self._proxy_headers}
        url = operation.address
        try:
            async with client.post(url, data=body, headers=headers, allow_redirects=False, **self._proxy) as response:
                raw = await read_body_bounded(response, limit=self.config.max_answer_bytes)
                status, content_type = response.status, response.headers.get("Content-Type", "")
        except AnswerTooLarge as exc:  # whether the service did it cannot be read: asked again, with the same idempotency key
            raise RetryableError(f"{operation.name}: {exc} (max_answer_bytes)") from exc
        except TimeoutError as exc:
            raise RetryableError(f"{operation.name} at {url} timed out after {self.config.timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"{operation.name} at {url} unreachable: {exc!r}") from exc
        if raw.lstrip()[:1] == b"<":
            try:
                reply = operation.reply(Answer(status, raw, {"Content-Type": content_type}))
            except FaultError as exc:
                raise self._classified(exc.fault, operation.name) from exc
            except ValueError:
                pass  # not an envelope (a proxy's HTML page): judged by its status below
            else:
                if 200 <= status < 300:
                    # A refusal without a fault (a Status the reply carries): refused_when, retry_when.
                    self._answer_checks.judge(reply, f"{operation.name} at {url} answered {status}", raw.decode("utf-8", "replace"))
                    return
        if 200 <= status < 300 and not raw.strip():
            return  # 202 with no body: one-way operations
        detail = f"{operation.name} at {url} answered {status}: {raw[:300].decode('utf-8', errors='replace')}"
        if status >= 500 or status in _RETRYABLE:
            raise RetryableError(detail)
        if status == 401 and self.config.basic_auth is not None:  # the credentials are at fault, not the event: wait for a fix
            raise RetryableError(f"{detail} (the basic_auth credentials were refused)")
        raise PermanentError(detail)

    def _classified(self, fault: Fault, operation: str) -> Exception:
        said = f"{operation}: {fault}"
        if any(fault.matches(p) for p in self.config.permanent_faults):
            return PermanentError(said)
        if any(fault.matches(p) for p in self.config.retryable_faults) or fault.about_credentials:
            return RetryableError(said)
        return PermanentError(said) if fault.from_the_request else RetryableError(said)
