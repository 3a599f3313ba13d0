"""Config models of the HTTP adapter family."""

from __future__ import annotations

__all__ = [
    "AnswerRules",
    "ApiKeyAuth",
    "ClientTls",
    "Dedupe",
    "HttpOutboundConfig",
    "HttpPollConfig",
    "OAuth2Connection",
    "Pagination",
    "SendApiKey",
    "SinceCursor",
    "WebhookConfig",
    "WebhookOutboundConfig",
    "WebhookSigning",
]

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.http.contracts import outbound_contract, webhook_contract
from adapters.http.jwt_auth import JwtAuth
from adapters.http.signatures import SignatureAuth
from bus.adapter_api import (
    AdapterConfig,
    AnswerExpression,
    BodyMap,
    ClientTls,
    ConfigModel,
    Contract,
    Duration,
    EmitSpec,
    Expression,
    OpenApiOperation,
    OutboundConfig,
    SecretTemplate,
    TemplateText,
    duration,
    paths_of,
)
from bus.credentials.client_credentials import OAuth2ClientCredentials


class ApiKeyAuth(ConfigModel):
    """A shared API key in a request header. Several keys may be valid at once, for rotation."""

    type: Literal["api_key"] = "api_key"
    header: str = Field(default="X-API-Key", description="Header that carries the key.")
    keys: list[SecretStr] = Field(min_length=1, description="Accepted keys (secrets: use ${ENV} or ${file:...}).")


BodyKind = Literal["json", "form", "xml"]
Method = Literal["POST", "PUT", "PATCH", "DELETE"]
_JSON_ONLY: list[BodyKind] = ["json"]


class Dedupe(ConfigModel):
    """Drop repeated deliveries: senders retry, and a retry after a lost answer is a duplicate."""

    header: str = Field(
        description="Header with the sender's delivery id.", examples=["X-GitHub-Delivery", "X-Shopify-Webhook-Id", "webhook-id"]
    )
    window: Duration = Field(default=duration("24h"), description="How long a delivery id is remembered.")
    max_entries: int = Field(default=100_000, ge=1, description="Most ids remembered; the oldest are forgotten first.")


class WebhookConfig(AdapterConfig):
    """Receive events as HTTP POSTs (JSON, form or XML) on the hub's webhook server."""

    provides_headers: ClassVar[bool] = True  # the request's headers, as $headers[...]

    type: Literal["http_webhook"] = "http_webhook"
    path: str = Field(
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        description="URL path to serve: no empty, `.` or `..` segment (HTTP clients and proxies resolve or merge them away).",
        examples=["/hooks/stripe"],
    )

    @field_validator("path")
    @classmethod
    def _reachable(cls, path: str) -> str:
        # "/hooks/../x" is sent as "/x" by curl, browsers and SDKs alike: such a path is never reached.
        if any(segment in ("", ".", "..") for segment in path[1:].split("/")[:-1]) or path.endswith(("/.", "/..")):
            raise ValueError(f"{path!r} has an empty, '.' or '..' segment, which HTTP clients and proxies resolve or merge away")
        return path

    auth: ApiKeyAuth | JwtAuth | None = Field(
        default=None,
        description="API key (type api_key, the default) or JWT bearer token (type jwt: a shared secret or a JWKS); "
        "none accepts every caller.",
    )
    accept: list[BodyKind] = Field(
        default_factory=_JSON_ONLY.copy,
        min_length=1,
        description="Bodies accepted, by Content-Type: json (application/json, +json), form (application/x-www-form-urlencoded), "
        "xml (application/xml, text/xml; attributes as plain keys, element text beside attributes as _text).",
    )
    dedupe: Dedupe | None = Field(default=None, description="Drop repeated deliveries by the sender's delivery-id header.")
    signature: SignatureAuth | None = Field(
        default=None,
        description="Body signature check (stripe, shopify, github, hubspot or generic hmac); refused requests get 401 with the reason.",
        examples=[{"type": "stripe", "secrets": ["${STRIPE_WEBHOOK_SECRET}"]}],
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger bodies are answered 413.")
    body_timeout: Duration = Field(
        default=duration("30s"),
        description="A sender that has not finished sending its body by then is answered 408 and nothing is published "
        "(a slow client cannot hold a request open for ever).",
    )
    batch: bool = Field(
        default=False,
        description="The body is a JSON array (HubSpot, SendGrid): each element becomes one event. The request is answered 202 "
        "once Kafka has all of them, or 400 naming the element that cannot be mapped (then none is published).",
    )
    max_batch_events: int = Field(
        default=10_000,
        ge=1,
        description="With `batch`: a body holding more elements is answered 413 and nothing is published (each element is "
        "mapped and checked before any is sent: a million small ones would hold the server for seconds).",
    )
    openapi: OpenApiOperation | None = Field(
        default=None,
        description="The OpenAPI operation (or 3.1 webhook) the senders follow: a JSON body that breaks its request body schema "
        "is answered 400 with the reason and where, and nothing is published; `bus validate` checks `emit` against it.",
        examples=[{"document": "contracts/shop.openapi.yaml", "operation": "orderCreated"}],
    )
    emit: EmitSpec = Field(description="How the JSON body (each element, with `batch`) becomes a canonical event.")

    def contract(self, base_dir: Path) -> Contract:
        return webhook_contract(self.openapi)

    def http_endpoint(self) -> dict[str, Any]:
        """This endpoint, for the hub's own OpenAPI document (``bus docs openapi``)."""
        security: dict[str, Any] = {}
        if isinstance(self.auth, ApiKeyAuth):
            security["api-key"] = {"type": "apiKey", "in": "header", "name": self.auth.header}
        elif isinstance(self.auth, JwtAuth):
            security["jwt"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        if self.signature is not None:
            header = {"stripe": "Stripe-Signature", "shopify": "X-Shopify-Hmac-Sha256", "github": "X-Hub-Signature-256"}
            name = header.get(self.signature.type, "X-HubSpot-Signature-v3" if self.signature.type == "hubspot" else self.signature.header)
            security["signature"] = {
                "type": "apiKey",
                "in": "header",
                "name": name,
                "description": f"A {self.signature.type} signature of the exact body bytes with the shared secret.",
            }
        kinds = {"json": "application/json", "form": "application/x-www-form-urlencoded", "xml": "application/xml"}
        return {
            "path": self.path,
            "method": "post",
            "summary": f"{self.emit.schema_} events into the hub ({self.name})",
            "description": "Answered 202 once Kafka holds the event"
            + (": the body is a JSON array, one event per element." if self.batch else "."),
            "content_types": [kinds[k] for k in self.accept],
            "security": security,
            "batch": self.batch,
        }


class SendApiKey(ConfigModel):
    """An API key the hub sends in a request header."""

    type: Literal["api_key"] = "api_key"
    header: str = Field(default="Authorization", description="Header that carries the key.")
    key: SecretStr = Field(description="The key, sent as is (include a 'Bearer ' prefix if the API wants one).")


class OAuth2Connection(ConfigModel):
    """Calls carry the access token of one of the hub's OAuth2 connections (top-level
    `connections:`: authorization code with PKCE, consent given once with `bus auth login NAME`)."""

    type: Literal["oauth2_connection"] = "oauth2_connection"
    connection: str = Field(description="The connection's name.", examples=["quickbooks"])


class AnswerRules(ConfigModel):
    """What a target may say inside a successful answer (adapters/http/answers.py): the same two
    settings on every outbound that calls a service and reads its answer (``http``, ``webhook``,
    ``graphql``, ``soap``)."""

    refused_when: AnswerExpression | None = Field(
        default=None,
        description="An expression over a successful answer (an HTTP answer's JSON object; a SOAP operation's reply, as the "
        "WSDL names its elements) that holds (true, or any value but null, false, 0 and empty) when the target refused the "
        "event though it answered: Slack's `ok == false`, a legacy API's `result.code != 0`, a SOAP reply's "
        '`Status != "POSTED"`. The event is then dead-lettered at once, with the answer. An empty answer is a delivery; '
        "an HTTP answer that is not JSON is retried (a proxy's page). `$answer` is the whole answer, whatever its shape: "
        'a JSON list (Salesforce\'s sObject Collections) is read as `find($answer, "success", false) != null`.',
        examples=["ok == false", 'find($answer, "success", false) != null'],
    )
    retry_when: AnswerExpression | None = Field(
        default=None,
        description='The same for an answer that asks to be called again later (`error == "ratelimited"`): retried like '
        "a 503. Judged before `refused_when`.",
        examples=['error == "ratelimited"'],
    )


class HttpOutboundConfig(AnswerRules, OutboundConfig):
    """Deliver each event as one HTTP call (POST of JSON by default)."""

    type: Literal["http"] = "http"
    url: TemplateText = Field(
        pattern=r"^https?://",
        description="Target URL; a ${} template over the event (each value is percent-encoded; write $${...} in YAML).",
        examples=["https://erp.example.com/api/payments", "https://crm.example.com/api/contacts/${customer_id}"],
    )
    method: Method = Field(default="POST", description="HTTP method (DELETE sends no body).")
    method_when: dict[Method, Expression] = Field(
        default_factory=dict,
        description="Other methods for some events: method -> condition; the first that holds wins, else `method`.",
        examples=[{"DELETE": 'status == "deleted"', "PUT": "exists(updated_at)"}],
    )
    headers: dict[str, SecretTemplate] = Field(
        default_factory=dict, description="Extra request headers (values may hold secrets, and ${} templates over the event)."
    )
    auth: SendApiKey | OAuth2ClientCredentials | OAuth2Connection | None = Field(
        default=None,
        discriminator="type",
        description="api_key; oauth2 client credentials (token cached, refreshed before expiry, fetched anew after a 401); or "
        "oauth2_connection: the token of one of the hub's `connections` (authorization code, a user's consent).",
    )
    body: BodyMap = Field(
        default=None,
        description=(
            "Body field -> expression over the event's fields ($id, $type... for metadata), or a nested block; "
            "a block with `$each: <list>` (and `$as: name`) gives one object per element (or one value: `$value`). "
            "Default: the event's fields."
        ),
        examples=[{"id": "payment_id", "amount_cents": "amount", "event_id": "$id"}],
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Per-call timeout: to connect, and for each wait for the answer's next bytes; the whole answer must "
        "also end within six times this (at least 60 s), so a target sending it a byte at a time cannot hold a call. "
        "A timeout is retried.",
    )
    idempotency_header: str = Field(default="Idempotency-Key", description="Header carrying the event id on every call.")
    retry_statuses: list[int] = Field(
        default_factory=list, description="Extra statuses to retry (besides 408, 425, 429 and 5xx).", examples=[[409]]
    )
    permanent_statuses: list[int] = Field(
        default_factory=list, description="Statuses to dead-letter at once even if normally retried.", examples=[[501]]
    )
    tls: ClientTls | None = Field(
        default=None,
        description="TLS settings for an https target: its CA, and a client certificate for mutual TLS.",
        examples=[{"cert": "certs/hub.pem", "key": "certs/hub.key", "ca": "certs/bank-ca.pem"}],
    )
    openapi: OpenApiOperation | None = Field(
        default=None,
        description="The target's OpenAPI operation this call follows. `bus validate` checks the body, method, URL path and "
        "query parameters against it; at run time a body that breaks its request body schema is dead-lettered with the "
        "schema's reason instead of being sent.",
        examples=[{"document": "contracts/github.openapi.json", "operation": "issues/create"}],
    )

    def contract(self, base_dir: Path) -> Contract:
        if self.tls is not None and (problems := self.tls.checked()).errors:
            return problems
        return outbound_contract(self.url, self.method, self.body, self.openapi)


class SinceCursor(ConfigModel):
    """Incremental polling: each poll asks only for records changed since the last one seen."""

    param: str = Field(description="Query parameter that carries the watermark.", examples=["updated_since"])
    field: Expression = Field(description="Expression over a record giving its watermark value.", examples=["updated_at"])
    id: Expression | None = Field(
        default=None,
        description="Expression giving a record's id, to tell apart records that share a watermark value "
        "(kept in the position). Default: a hash of the record.",
        examples=["id"],
    )
    initial: str = Field(default="", description="Watermark of the very first poll; empty sends no parameter (everything).")
    prefix: str = Field(
        default="",
        description="Text sent before the watermark in the parameter (FHIR: `ge`, for `_lastUpdated=ge<instant>`).",
        examples=["ge"],
    )
    suffix: str = Field(
        default="",
        description="Text sent after the watermark: with `prefix`, a query language's text around it (Salesforce SOQL).",
        examples=[" ORDER BY SystemModstamp, Id"],
    )
    overlap: Duration = Field(
        default=duration("0s"),
        description="Ask again from this much before the watermark at every poll (a time, or epoch seconds or milliseconds): "
        "for APIs that make a record visible after records changed later (a search index that lags, a replica: HubSpot "
        "search, Salesforce SystemModstamp). A record in that window not read before is published; one read before is not "
        "(remembered in the position, the newest 5,000). 0s: from the watermark itself.",
        examples=["5m"],
    )
    ordered: bool = Field(
        default=True,
        description="The API returns records in ascending watermark order, so the position is saved after every page "
        "(a restart resumes mid-backfill). false: saved only after the last page of a poll. Records found out of order are "
        "never dropped: the poll then saves only at its end, and says so.",
    )


class Pagination(ConfigModel):
    """How to walk the pages of one poll."""

    type: Literal["none", "page", "offset", "cursor", "link"] = Field(
        default="none",
        description="page: ?page=1,2..; offset: ?offset=0,100..; cursor: the next cursor from the response (`next`); "
        "link: the next page's URL, from the RFC 8288 Link header's rel=next (GitHub, Shopify) or, with `next`, from the body "
        "(FHIR Bundle.link, HAL _links.next.href).",
    )
    param: str | None = Field(
        default=None, description="Query parameter of the page number, offset or cursor (default: page, offset, cursor)."
    )
    size_param: str | None = Field(default=None, description="Query parameter of the page size.", examples=["per_page", "limit"])
    size: int = Field(default=100, ge=1, description="Page size asked for; a shorter page is the last one (page, offset).")
    start: int = Field(default=1, description="page: number of the first page.")
    next: Expression | None = Field(
        default=None,
        description="cursor: expression over the response body giving the next cursor; link: giving the next page's URL "
        "(relative URLs are resolved). Null or empty ends the poll.",
        examples=["meta.next_cursor", 'find(link, "relation", "next").url'],
    )
    max_pages: int = Field(default=10_000, ge=1, description="Safety stop for one poll.")

    @model_validator(mode="after")
    def _check(self) -> Pagination:
        if self.type == "cursor" and self.next is None:
            raise ValueError("pagination type cursor needs `next`: where the response gives the next cursor")
        return self


class HttpPollConfig(AdapterConfig):
    """Poll a REST API on an interval and publish each new record as an event. The position (the
    watermark and the ids seen at it) is kept in Kafka, so a restart resumes where it stopped."""

    type: Literal["http_poll"] = "http_poll"
    url: str = Field(pattern=r"^https?://", description="Collection URL.", examples=["https://crm.example.com/api/leads"])
    interval: Duration = Field(default=duration("30s"), description="Time between the end of one poll and the start of the next.")
    params: dict[str, str] = Field(default_factory=dict, description="Fixed query parameters.", examples=[{"status": "open"}])
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra request headers (values may hold secrets).")
    auth: SendApiKey | OAuth2ClientCredentials | OAuth2Connection | None = Field(
        default=None,
        discriminator="type",
        description="api_key, oauth2 (client credentials), or oauth2_connection (one of the hub's `connections`).",
    )
    records: Expression | None = Field(
        default=None,
        description="Expression over the response body giving the list of records; none: the body is the list.",
        examples=["data", "records"],
    )
    since: SinceCursor = Field(
        description="Incremental polling by a watermark: each poll asks only for records changed since the last one seen. "
        "Required: without it every poll would publish the whole collection again."
    )
    pagination: Pagination = Field(default_factory=Pagination, description="How to walk the pages.")
    etag: bool = Field(default=True, description="Send If-None-Match with the last ETag; a 304 means nothing changed.")
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Per-call timeout: to connect, and for each wait for the answer's next bytes; the whole answer must "
        "also end within six times this (at least 60 s). A timeout is retried.",
    )
    max_page_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="An answer larger than this (decoded) is refused, not read: an API that ignores the page size asked for "
        "would otherwise answer with every record it has and take the hub's memory. Ask for smaller pages first.",
    )
    max_wait: Duration = Field(
        default=duration("5m"), description="Longest wait the hub accepts from a rate-limit answer (Retry-After, X-RateLimit-Reset)."
    )
    retries: int = Field(
        default=5, ge=0, description="Retries of one request on 429, 5xx, timeouts, before the poll is given up until the next interval."
    )
    emit: EmitSpec = Field(
        description="How a record becomes a canonical event. Without `id`, the id is a hash of the record, so a re-read keeps it. "
        'With `id`, make it name the version too (`id + "@" + updated_at`): an updated record is a new event.'
    )

    def config_warnings(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Found by ``bus validate``: an ``emit.id`` that does not change when a record does (it reads
        neither the watermark nor a field named like a version)."""
        if self.emit.id is None:
            return []
        watermark, ids = paths_of(self.since.field), paths_of(self.emit.id)
        # It reads the watermark, or a field that names a version itself (FHIR's meta.versionId, an ETag).
        versioned = any(re.search(r"version|(^|[._])rev|etag", path, re.IGNORECASE) for path in ids)
        if watermark and not watermark & ids and not versioned:
            example = f'{self.emit.id} + "@" + {sorted(watermark)[0]}'
            return [
                (
                    ("emit", "id"),
                    f"{self.emit.id!r} does not change when a record changes ({', '.join(sorted(watermark))} does): an "
                    f"updated record gets the id of its first version, and a target that deduplicates by id drops the "
                    f"update; name the version in it, e.g. {example!r}",
                )
            ]
        return []


class WebhookSigning(ConfigModel):
    """How outbound webhooks are signed, so a receiver can tell they come from the hub."""

    scheme: Literal["standard", "hmac"] = Field(
        default="standard",
        description="standard: Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of "
        "'<id>.<timestamp>.<body>'>), verifiable with the standardwebhooks libraries; hmac: hex HMAC-SHA256 of the body in `header`.",
    )
    secret: SecretStr = Field(description="Signing secret (standard: whsec_<base64>, or any text; use ${ENV}).")
    header: str = Field(default="X-Hub-Signature-256", description="hmac: the header carrying the signature.")
    prefix: str = Field(default="sha256=", description="hmac: text before the hex digest.")


class WebhookOutboundConfig(HttpOutboundConfig):
    """POST each event to a subscriber's URL, HMAC-signed (docs/adapters.md says how to verify)."""

    type: Literal["webhook"] = "webhook"  # type: ignore[assignment]
    signing: WebhookSigning = Field(description="Signature scheme and secret.")
