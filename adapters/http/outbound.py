"""``http``: deliver each event as one HTTP call; the answer decides delivered / retry / dead letter.

2xx delivered. 408, 425, 429 and 5xx, timeouts and connection errors are retried (honouring a
Retry-After in seconds). Any other 4xx is permanent: the target will refuse the same call again.
``retry_statuses`` and ``permanent_statuses`` override this per target; the runtime's
``delivery:`` policy decides how often and how long to retry. Many APIs answer 200 and say inside
the answer that they refused the call (Slack's ``{"ok": false}``, a legacy API's result code):
``refused_when`` and ``retry_when``, expressions over the answer's JSON, make such an answer a dead
letter or a retry instead of a delivery.
Every call carries the event id in ``Idempotency-Key`` so a target can drop repeats.

``auth:`` sends an API key or an OAuth2 client-credentials token (cached, refreshed before it
expires; a 401 drops it and the call is made once more with a new one). ``webhook`` is the same call, signed:
Standard Webhooks headers (or a plain HMAC header) over the exact bytes sent.
"""

from __future__ import annotations

__all__ = ["HttpOutbound", "WebhookOutbound", "standard_webhook_signature"]

import asyncio
import base64
import hashlib
import hmac
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from multidict import CIMultiDictProxy
from yarl import URL

from adapters.http.answers import AnswerChecks
from adapters.http.bounded import answer_budget
from adapters.http.config import HttpOutboundConfig, OAuth2Connection, SendApiKey, WebhookOutboundConfig
from adapters.http.contracts import body_check
from adapters.http.target_state import HttpTargetState
from adapters.http.wire import WireClient, via_wire
from adapters.polling import wait_seconds
from bus.adapter_api import (
    Body,
    BodyCheck,
    Context,
    Event,
    Outbound,
    PermanentError,
    RetryableError,
    TargetOptions,
    compile_expression,
    compile_template,
    json_dumps,
    parse_json,
)
from bus.cloudevents import http_headers
from bus.credentials.client_credentials import ClientCredentials, OAuth2ClientCredentials, Post
from bus.jsontext import escape_surrogates, to_target

_RETRYABLE = {408, 425, 429}
_URL_SAFE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


def _path_value(value: str) -> str:
    """A template value as one path segment: percent-encoded, and ``.``/``..`` encoded too, so no
    proxy or client that normalises paths can turn ``/items/../detail`` into ``/detail``."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _url(text: str) -> URL:
    """The URL exactly as built when it is already valid (template values were percent-encoded,
    and ``%2F`` must stay one path segment); otherwise let yarl quote what needs quoting."""
    return URL(text, encoded=True) if _URL_SAFE.fullmatch(text) else URL(text)


@dataclass(frozen=True, slots=True)
class Answer:
    """A target's answer, read whole (the text goes into a dead letter's reason)."""

    status_code: int
    text: str
    headers: CIMultiDictProxy[str]


def _retry_after(response: Answer) -> float | None:
    """Retry-After as seconds or an HTTP date (RFC 9110); None when it says no wait a clock can use
    (the runtime's backoff then). The runtime caps it at ``delivery.backoff_max``."""
    return wait_seconds(response.headers.get("Retry-After", ""), time.time())


def _json_body(document: Any) -> bytes:
    """A document as a JSON body. What a target once answered can hold text that is no Unicode
    (a lone surrogate, read from its ``"\\ud800"``): put back, it is sent as that same escape."""
    text = json_dumps(document)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return escape_surrogates(text).encode()


def _event_body(document: Any) -> bytes:
    """An event's body as JSON; a NaN or an infinity is refused naming the field (``to_target``)."""
    return to_target(document).encode()


class HttpOutbound(Outbound[HttpOutboundConfig]):
    Config: ClassVar[type[HttpOutboundConfig]] = HttpOutboundConfig
    summary: ClassVar[str] = "POST (or PUT/PATCH) each event as JSON to a URL; API key or OAuth2 client credentials."

    def __init__(self, config: HttpOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._url = compile_template(config.url, escape=_path_value)
        self._methods = [(method, compile_expression(condition)) for method, condition in config.method_when.items()]
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        templates = {k: compile_template(v) for k, v in headers.items()}
        self._header_templates = {k: t for k, t in templates.items() if not t.constant}  # rendered per event
        self._headers = {k: v for k, v in headers.items() if k not in self._header_templates}
        self._per_event = bool(self._methods) or not self._url.constant or bool(self._header_templates)
        # Per call, not on the client (the token request is a form), unless the config names its own.
        self._content_type = {} if any(k.lower() == "content-type" for k in self._headers) else {"Content-Type": "application/json"}
        if isinstance(config.auth, SendApiKey):
            self._headers[config.auth.header] = config.auth.key.get_secret_value()
        oauth = config.auth if isinstance(config.auth, OAuth2ClientCredentials) else None
        self._oauth = ClientCredentials(oauth, what=f"{config.type} {config.name}") if oauth else None
        self._connection = config.auth.connection if isinstance(config.auth, OAuth2Connection) else None
        self._bearer = self._oauth is not None or self._connection is not None  # a 401 means: a new token, then once more
        # Deliveries go through the lean client of adapters/http/wire.py: httpx's pool checked every
        # idle connection on each request, and aiohttp's client cost three times the bare HTTP/1.1
        # of the benchmark per call (bench/RESULTS.md). OAuth2 token calls go through it too.
        self._client: WireClient | None = None
        self._token_post: Post | None = None
        self._constant_url = _url(config.url)
        self._retryable = _RETRYABLE | set(config.retry_statuses)
        self._permanent = frozenset(config.permanent_statuses)
        self._contract: BodyCheck | None = None  # the target's OpenAPI request body schema, read at start
        self._answer_checks = AnswerChecks(retry_when=config.retry_when, refused_when=config.refused_when)

    async def start(self) -> None:
        if self.config.openapi is not None and self._contract is None:
            self._contract = await body_check(self.config.openapi, "the target's")
        if self._client is None:
            tls = None
            if self.config.tls is not None:
                try:
                    tls = await asyncio.to_thread(self.config.tls.context)
                except (OSError, ssl.SSLError) as exc:
                    raise RetryableError(f"the TLS files cannot be used: {exc}") from exc
            # Per phase: connected within timeout_s, and no read waiting longer than timeout_s. A total
            # budget as tight would also count time the hub's own event loop was busy, and give up on
            # calls the target answered in time; a loose one (six times, at least a minute) still
            # ends a call whose answer comes a byte at a time, which no read timeout would.
            timeout = self.config.timeout_s
            self._client = WireClient(
                limit=64, connect_timeout=timeout, read_timeout=timeout, answer_within=answer_budget(timeout), tls=tls
            )
            if self._oauth is not None:  # the token endpoint's form posts go through the same client
                self._token_post = via_wire(self._client)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        self._token_post = None

    def render(self, event: Event) -> dict[str, Any]:
        return self._body.render(event)

    def _method(self, event: Event, meta: dict[str, Any]) -> str:
        for method, condition in self._methods:
            if condition(event.data, meta):
                return method
        return self.config.method

    async def deliver(self, event: Event) -> None:
        if self._client is None:
            raise RetryableError(f"http outbound {self.config.name} is not started")
        meta = event.meta() if self._per_event else {}  # once, and only when something is templated
        method = self._method(event, meta)
        url = self.config.url if self._url.constant else self._url(event.data, meta)
        body = b"" if method == "DELETE" else _event_body(self.render(event))
        if self._contract is not None and body:
            # The target would refuse it: say why now, instead of spending a call on a 400.
            problem = self._contract.problem(json.loads(body))
            if problem is not None:
                raise PermanentError(f"the body breaks the target's contract ({self._contract.name}): {problem}; not sent")
        headers = {
            **self._headers,
            **({} if method == "DELETE" else self._content_type),
            self.config.idempotency_header: event.id,
            **http_headers(event),  # CloudEvents HTTP binding, binary mode; and traceparent
            **{name: template(event.data, meta) for name, template in self._header_templates.items()},
            **self.signed(event, body),
        }
        response = await self._call(method, url, body, headers)
        if response.status_code == 401 and self._bearer:
            # A revoked or rotated token: fetch a new one and call again, once. This is not a
            # delivery retry (no backoff, no breaker failure): the first call never reached the target.
            response = await self._call(method, url, body, headers)
        status = response.status_code
        if 200 <= status < 300:
            self.check_answer(method, url, response)
            return
        detail = f"{method} {url} answered {status}: {response.text[:300]}"
        if 300 <= status < 400 and "Location" in response.headers:
            # Redirects are not followed (a POST moved elsewhere is a change of config to make on
            # purpose, and a redirect could send signed bodies anywhere): say where it points.
            detail = (
                f"{method} {url} answered {status} to {response.headers['Location'][:300]}: redirects are not followed; set the url to it"
            )
        if status == 401 and self._bearer:
            raise RetryableError(detail)  # a fresh token refused too: the credentials are wrong; wait for a fix
        if self.retryable(status):
            raise RetryableError(detail, retry_after=_retry_after(response))
        raise PermanentError(detail)

    def check_answer(self, method: str, url: str, response: Answer) -> None:
        """A 2xx answer is a delivery unless ``retry_when`` or ``refused_when`` holds over its JSON;
        a protocol that reports failures inside a 2xx answer (GraphQL's ``errors``) raises from this too."""
        if not self._answer_checks or not response.text.strip():
            return  # nothing to judge (204 No Content): a delivery
        said = f"{method} {url} answered {response.status_code}"
        try:
            answer = parse_json(response.text, repeated_keys="last")
        except ValueError:
            # A proxy's or a maintenance page in a 200: the target itself may answer later.
            raise RetryableError(f"{said} with no JSON to judge refused_when/retry_when by: {response.text[:200]!r}") from None
        self._answer_checks.judge(answer, said, response.text)

    def retryable(self, status: int) -> bool:
        """Whether an answer with this (non-2xx) status is worth asking again: 5xx, 408, 425, 429
        and ``retry_statuses``, unless ``permanent_statuses`` names it."""
        return status not in self._permanent and (status >= 500 or status in self._retryable)

    async def _call(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert self._client is not None
        token = None
        if self._oauth is not None:
            assert self._token_post is not None
            token = await self._oauth.token(self._token_post)
            headers = headers | {"Authorization": f"Bearer {token}"}
        elif self._connection is not None:
            if self.ctx.credentials is None:
                raise RetryableError(f"outbound {self.config.name}: the hub has no connections (connections: in the config)")
            token = await self.ctx.credentials.token(self._connection)
            headers = headers | {"Authorization": f"Bearer {token}"}
        try:
            target = self._constant_url if url is self.config.url else _url(url)
        except ValueError as exc:  # the event made a URL that cannot be sent: trying again cannot help
            raise PermanentError(f"cannot build the request URL {url!r}: {exc}") from exc
        try:
            # No redirects: a target that moved answers 3xx, which is not a delivery.
            answer = await self._client.request(method, target, headers, body)
        except TimeoutError as exc:
            raise RetryableError(f"{method} {url} timed out after {self.config.timeout_s:g}s") from exc
        except OSError as exc:  # refused, reset, unresolvable, TLS, an answer that is not HTTP
            raise RetryableError(f"{method} {url} unreachable: {exc!r}") from exc
        except ValueError as exc:  # a request that cannot be sent (the URL's scheme or host, a header): the event's fault
            raise PermanentError(f"cannot build the request {method} {url}: {exc}") from exc
        response = Answer(answer.status, answer.body.decode("utf-8", errors="replace"), answer.headers)  # text: for the dead letter
        if response.status_code == 401 and self._oauth is not None:
            self._oauth.invalidate(token)
        elif response.status_code == 401 and self._connection is not None and token is not None and self.ctx.credentials is not None:
            await self.ctx.credentials.rejected(self._connection, token)
        return response

    def signed(self, event: Event, body: bytes) -> dict[str, str]:
        """Signature headers over the exact body bytes; none for plain ``http``."""
        return {}

    # What bus migrate uses (adapters/http/target_state.py): the same client, auth and headers.
    def expected(self, event: Event) -> dict[str, Any] | None:
        """The body a delivery of ``event`` sends (None: the call is a DELETE)."""
        meta = event.meta() if self._per_event else {}
        return None if self._method(event, meta) == "DELETE" else self.render(event)

    async def request(self, method: str, url: str, document: Any = None) -> tuple[int, str]:
        """One call with the configured headers and auth (no event headers): (status, text)."""
        if self._client is None:
            raise RetryableError(f"http outbound {self.config.name} is not started")
        body = b"" if document is None else _json_body(document)
        headers = {**self._headers, **(self._content_type if body else {})}
        response = await self._call(method, url, body, headers)
        if response.status_code == 401 and self._bearer:
            response = await self._call(method, url, body, headers)
        return response.status_code, response.text

    def target_state(self, options: TargetOptions) -> HttpTargetState:
        return HttpTargetState(self, options, escape=_path_value)


def _standard_key(secret: str) -> bytes:
    """Standard Webhooks secrets are ``whsec_`` + base64 of the key; any other text is the key itself."""
    return base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()


def standard_webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` (standardwebhooks.com)."""
    digest = hmac.new(_standard_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookOutbound(HttpOutbound):
    Config: ClassVar[type[HttpOutboundConfig]] = WebhookOutboundConfig
    summary: ClassVar[str] = "POST each event to a subscriber, HMAC-signed (Standard Webhooks or a plain HMAC header)."

    def __init__(self, config: WebhookOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._signing = config.signing
        self._secret = config.signing.secret.get_secret_value()

    def signed(self, event: Event, body: bytes) -> dict[str, str]:
        if self._signing.scheme == "hmac":
            digest = hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
            return {self._signing.header: self._signing.prefix + digest}
        # A retry is signed anew with a fresh timestamp (receivers refuse old ones); the id stays.
        timestamp = int(time.time())
        return {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhook_signature(self._secret, event.id, timestamp, body),
        }
