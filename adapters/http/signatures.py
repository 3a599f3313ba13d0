"""Webhook signatures in the schemes senders really use, checked over the raw body.

- ``stripe``: ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">[,v1=...]``;
  the timestamp must be within ``tolerance_s`` of now (replayed requests are refused).
- ``shopify``: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>``.
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
- ``hubspot``: HubSpot's v3 scheme, ``X-HubSpot-Signature-v3: <base64 HMAC-SHA256 of
  method + URL + body + X-HubSpot-Request-Timestamp>``, keyed with the app's client secret; the
  timestamp (milliseconds) must be within ``tolerance_s``. The URL is the one HubSpot called:
  set ``url`` when the hub sits behind a proxy that changes scheme or host.
- ``hmac``: any header, algorithm, hex or base64, optional prefix, for everyone else.

Several secrets may be valid at once (rotation). Comparisons are constant-time. A failure reason
says what was wrong with the request, never anything about the secret.
"""

from __future__ import annotations

__all__ = ["SignatureAuth", "check_signature"]

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr

from bus.adapter_api import ConfigModel, whole_number


class SignatureAuth(ConfigModel):
    """An HMAC signature of the body, in the scheme of a known sender or a generic one."""

    type: Literal["stripe", "shopify", "github", "hubspot", "hmac"] = Field(description="Signature scheme.")
    secrets: list[SecretStr] = Field(min_length=1, description="Signing secrets (several during rotation); use ${ENV}.")
    tolerance_s: int = Field(default=300, ge=1, description="stripe, hubspot: how old a signed timestamp may be, in seconds.")
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="hubspot: the webhook URL as registered at HubSpot (default: the URL of the request as the hub sees it).",
        examples=["https://hub.example.com/hooks/hubspot"],
    )
    header: str = Field(default="X-Signature", description="hmac: the header carrying the signature.")
    algorithm: Literal["sha1", "sha256", "sha512"] = Field(default="sha256", description="hmac: the hash.")
    encoding: Literal["hex", "base64"] = Field(default="hex", description="hmac: how the digest is written.")
    prefix: str = Field(default="", description="hmac: text before the digest, e.g. 'sha256='.")


def _digest(secret: bytes, message: bytes, algorithm: str) -> bytes:
    return hmac.new(secret, message, getattr(hashlib, algorithm)).digest()


def _expected(secrets: list[bytes], message: bytes, algorithm: str, encoding: str) -> list[bytes]:
    """The signature each secret gives ``message``, as the sender writes it."""
    digests = [_digest(secret, message, algorithm) for secret in secrets]
    return [(d.hex() if encoding == "hex" else base64.b64encode(d).decode()).encode() for d in digests]


def _matches(offered: str, expected: list[bytes]) -> bool:
    found = False
    for signature in expected:
        found |= hmac.compare_digest(offered.encode(), signature)  # no early exit: timing tells nothing
    return found


def check_signature(
    auth: SignatureAuth, headers: Mapping[str, str], body: bytes, *, now: float | None = None, method: str = "POST", url: str = ""
) -> str | None:
    """None when the request is signed by one of the secrets; otherwise why it is refused.
    ``method`` and ``url`` (as the hub received them) matter only to schemes that sign them."""
    secrets = [s.get_secret_value().encode() for s in auth.secrets]
    if auth.type == "stripe":
        return _stripe(headers.get("Stripe-Signature", ""), secrets, body, auth.tolerance_s, time.time() if now is None else now)
    if auth.type == "hubspot":
        moment = time.time() if now is None else now
        return _hubspot(headers, secrets, body, method=method, url=auth.url or url, tolerance_s=auth.tolerance_s, now=moment)
    header, algorithm, encoding, prefix = {
        "shopify": ("X-Shopify-Hmac-Sha256", "sha256", "base64", ""),
        "github": ("X-Hub-Signature-256", "sha256", "hex", "sha256="),
        "hmac": (auth.header, auth.algorithm, auth.encoding, auth.prefix),
    }[auth.type]
    offered = headers.get(header, "")
    if not offered:
        return f"missing signature header {header}"
    if not offered.startswith(prefix):
        return f"signature in {header} does not start with {prefix!r}"
    if not _matches(offered.removeprefix(prefix), _expected(secrets, body, algorithm, encoding)):
        return f"signature in {header} does not match the body"
    return None


_LATEST = 10**16 - 1


def _epoch(text: str) -> int | None:
    """A sender's timestamp: at most 16 digits (milliseconds until the year 318857). Numbers past
    what a float holds broke the age's arithmetic (an answer 500, not 401)."""
    return whole_number(text, _LATEST)


def _hubspot(
    headers: Mapping[str, str], secrets: list[bytes], body: bytes, *, method: str, url: str, tolerance_s: int, now: float
) -> str | None:
    offered = headers.get("X-HubSpot-Signature-v3", "")
    if not offered:
        return "missing signature header X-HubSpot-Signature-v3"
    stamp = headers.get("X-HubSpot-Request-Timestamp", "")
    at_ms = _epoch(stamp)
    if at_ms is None:
        return "X-HubSpot-Request-Timestamp is missing or not milliseconds"
    age = abs(now - at_ms / 1000)
    if age > tolerance_s:
        return f"X-HubSpot-Request-Timestamp is {age:.0f}s from now (tolerance {tolerance_s}s)"
    message = method.encode() + url.encode() + body + stamp.encode()
    if not _matches(offered, _expected(secrets, message, "sha256", "base64")):
        return "X-HubSpot-Signature-v3 does not match method, URL, body and timestamp (is `url` the one registered at HubSpot?)"
    return None


def _stripe(value: str, secrets: list[bytes], body: bytes, tolerance_s: int, now: float) -> str | None:
    if not value:
        return "missing signature header Stripe-Signature"
    parts: dict[str, list[str]] = {}
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        parts.setdefault(key, []).append(text)
    timestamp = _epoch(parts.get("t", [""])[0])
    if timestamp is None:
        return "Stripe-Signature has no valid timestamp t="
    if abs(now - timestamp) > tolerance_s:
        return f"Stripe-Signature timestamp is {abs(now - timestamp):.0f}s from now (tolerance {tolerance_s}s)"
    # The body is signed once per secret, not once per v1 offered: a header of a thousand v1 values
    # made an unsigned request cost 1.4 s of the event loop with a 1 MiB body (a request a second
    # would have held every webhook and delivery of the process).
    expected = _expected(secrets, f"{timestamp}.".encode() + body, "sha256", "hex")
    if not any(_matches(v1, expected) for v1 in parts.get("v1", [])):
        return "no v1 signature in Stripe-Signature matches the body"
    return None
