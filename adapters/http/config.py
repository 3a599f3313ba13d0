"""Config models of the HTTP adapter family."""

from __future__ import annotations

__all__ = ["ApiKeyAuth", "HttpOutboundConfig", "WebhookConfig"]

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from adapters.http.signatures import SignatureAuth
from bus.adapter_api import AdapterConfig, BodyMap, EmitSpec, OutboundConfig


class ApiKeyAuth(BaseModel):
    """A shared API key in a request header. Several keys may be valid at once, for rotation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["api_key"] = "api_key"
    header: str = Field(default="X-API-Key", description="Header that carries the key.")
    keys: list[SecretStr] = Field(min_length=1, description="Accepted keys (secrets: use ${ENV} or ${file:...}).")


class WebhookConfig(AdapterConfig):
    """Receive events as HTTP POSTs of JSON on the hub's webhook server."""

    type: Literal["http_webhook"] = "http_webhook"
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$", description="URL path to serve.", examples=["/hooks/stripe"])
    auth: ApiKeyAuth | None = Field(default=None, description="API key check; none accepts every caller.")
    signature: SignatureAuth | None = Field(
        default=None,
        description="Body signature check (stripe, shopify, github or generic hmac); refused requests get 401 with the reason.",
        examples=[{"type": "stripe", "secrets": ["${STRIPE_WEBHOOK_SECRET}"]}],
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger bodies are answered 413.")
    emit: EmitSpec = Field(description="How the JSON body becomes a canonical event.")


class HttpOutboundConfig(OutboundConfig):
    """Deliver each event as one HTTP call (POST of JSON by default)."""

    type: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://", description="Target URL.", examples=["https://erp.example.com/api/payments"])
    method: Literal["POST", "PUT", "PATCH"] = Field(default="POST", description="HTTP method.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra request headers (values may hold secrets).")
    body: BodyMap = Field(
        default=None,
        description="Body field -> expression over the event's fields ($id, $type... for metadata). Default: the event's fields.",
        examples=[{"id": "payment_id", "amount_cents": "amount", "event_id": "$id"}],
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Per-call timeout; a timeout is retried.")
    idempotency_header: str = Field(default="Idempotency-Key", description="Header carrying the event id on every call.")
    retry_statuses: list[int] = Field(
        default_factory=list, description="Extra statuses to retry (besides 408, 425, 429 and 5xx).", examples=[[409]]
    )
    permanent_statuses: list[int] = Field(
        default_factory=list, description="Statuses to dead-letter at once even if normally retried.", examples=[[501]]
    )
