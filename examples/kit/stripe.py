"""A stand-in for Stripe sending webhook events, as Stripe sends them.

Each delivery is a POST of an ``event`` object with ``Stripe-Signature: t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<raw body>">``, keyed with the endpoint's signing secret (``whsec_...``).
Stripe retries an event it thinks was not received, with the same event id and a new signature.
Payloads follow the API's ``payment_intent.*`` events (amounts in minor units, lower-case currency).
"""

from __future__ import annotations

__all__ = ["StripeAccount", "stripe_signature"]

import hashlib
import hmac
import json
import random
import time
from typing import Any

import httpx


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class StripeAccount:
    def __init__(self, secret: str, *, seed: int = 3) -> None:
        self.secret = secret
        self.rng = random.Random(seed)

    def payment_event(self, n: int, *, kind: str = "succeeded") -> dict[str, Any]:
        amount = self.rng.choice([1_999, 4_500, 12_000, 99_900, 250_000])
        status = {"succeeded": "succeeded", "payment_failed": "requires_payment_method", "canceled": "canceled"}[kind]
        return {
            "id": f"evt_3Q{n:08d}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "type": f"payment_intent.{kind}",
            "data": {
                "object": {
                    "id": f"pi_3Q{n:08d}",
                    "object": "payment_intent",
                    "amount": amount,
                    "amount_received": amount if kind == "succeeded" else 0,
                    "currency": self.rng.choice(["usd", "eur", "gbp"]),
                    "customer": f"cus_R{self.rng.randint(1, 9):04d}",
                    "description": f"Invoice INV-{20_000 + n}",
                    "status": status,
                }
            },
        }

    async def deliver(
        self, client: httpx.AsyncClient, url: str, event: dict[str, Any], *, secret: str | None = None, signed_at: int | None = None
    ) -> httpx.Response:
        body = json.dumps(event).encode()
        signature = stripe_signature(secret or self.secret, body, int(time.time()) if signed_at is None else signed_at)
        return await client.post(url, content=body, headers={"Content-Type": "application/json", "Stripe-Signature": signature})
