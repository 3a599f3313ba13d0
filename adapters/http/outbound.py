"""``http``: deliver each event as one HTTP call; the answer decides delivered / retry / dead letter.

2xx delivered. 408, 425, 429 and 5xx, timeouts and connection errors are retried (honouring a
Retry-After in seconds). Any other 4xx is permanent: the target will refuse the same call again.
``retry_statuses`` and ``permanent_statuses`` override this per target; the runtime's
``delivery:`` policy decides how often and how long to retry.
Every call carries the event id in ``Idempotency-Key`` so a target can drop repeats.
"""

from __future__ import annotations

__all__ = ["HttpOutbound"]

from typing import Any, ClassVar

import httpx

from adapters.http.config import HttpOutboundConfig
from bus.adapter_api import Body, Context, Event, Outbound, PermanentError, RetryableError

_RETRYABLE = {408, 425, 429}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the runtime's backoff


class HttpOutbound(Outbound[HttpOutboundConfig]):
    Config: ClassVar[type[HttpOutboundConfig]] = HttpOutboundConfig
    summary: ClassVar[str] = "POST (or PUT/PATCH) each event as JSON to a URL."

    def __init__(self, config: HttpOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        self._client: httpx.AsyncClient | None = None
        self._retryable = _RETRYABLE | set(config.retry_statuses)
        self._permanent = frozenset(config.permanent_statuses)

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout_s,
                headers=self._headers,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def render(self, event: Event) -> dict[str, Any]:
        return self._body.render(event)

    async def deliver(self, event: Event) -> None:
        if self._client is None:
            raise RetryableError(f"http outbound {self.config.name} is not started")
        body = self.render(event)
        headers = {
            self.config.idempotency_header: event.id,
            "ce-id": event.id,
            "ce-type": event.type,
            "ce-source": event.source,
            "ce-specversion": "1.0",
            "traceparent": event.traceparent,
        }
        try:
            response = await self._client.request(self.config.method, self.config.url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{self.config.url} timed out after {self.config.timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{self.config.url} unreachable: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"{self.config.method} {self.config.url} answered {status}: {response.text[:300]}"
        if status in self._permanent:
            raise PermanentError(detail)
        if status >= 500 or status in self._retryable:
            raise RetryableError(detail, retry_after=_retry_after(response))
        raise PermanentError(detail)
