"""A stand-in for a Shopify store sending webhooks, as Shopify sends them.

Each delivery is a POST with the JSON body and Shopify's headers: ``X-Shopify-Topic``,
``X-Shopify-Shop-Domain``, ``X-Shopify-API-Version``, ``X-Shopify-Webhook-Id`` (the same on a
retried delivery) and ``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw body, keyed
with the app's client secret. Payloads follow the REST Admin API's ``orders/create`` shape
(money as decimal strings, ``line_items`` with ``sku``, ``quantity``, ``price``).
"""

from __future__ import annotations

__all__ = ["ShopifyStore", "shopify_hmac"]

import base64
import hashlib
import hmac
import json
import random
import uuid
from decimal import Decimal
from typing import Any

import httpx

CATALOG = {"MUG-11OZ": "14.50", "TEE-BLK-M": "24.00", "CAP-NAVY": "19.99", "POSTER-A2": "9.95", "SOCKS-3PK": "12.00"}


def shopify_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class ShopifyStore:
    def __init__(self, secret: str, *, shop: str = "bus-demo.myshopify.com", seed: int = 11) -> None:
        self.secret = secret
        self.shop = shop
        self.rng = random.Random(seed)

    def order(self, number: int, customer_id: int) -> dict[str, Any]:
        skus = self.rng.sample(sorted(CATALOG), self.rng.randint(1, 3))
        lines: list[dict[str, Any]] = [
            {"id": number * 10 + i, "sku": sku, "title": sku.title(), "quantity": self.rng.randint(1, 4), "price": CATALOG[sku]}
            for i, sku in enumerate(skus)
        ]
        total = sum((Decimal(line["price"]) * line["quantity"] for line in lines), Decimal(0))
        return {
            "id": 5_000_000_000 + number,
            "admin_graphql_api_id": f"gid://shopify/Order/{5_000_000_000 + number}",
            "name": f"#{number}",
            "order_number": number,
            "email": f"buyer{customer_id}@example.com",
            "created_at": "2026-12-02T10:00:00-05:00",
            "currency": "USD",
            "financial_status": "paid",
            "subtotal_price": f"{total:.2f}",
            "total_price": f"{total:.2f}",
            "customer": {"id": customer_id, "email": f"buyer{customer_id}@example.com"},
            "line_items": lines,
        }

    def headers(self, topic: str, body: bytes, webhook_id: str | None = None, *, secret: str | None = None) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": self.shop,
            "X-Shopify-API-Version": "2025-10",
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Hmac-Sha256": shopify_hmac(secret or self.secret, body),
        }

    async def deliver(
        self,
        client: httpx.AsyncClient,
        url: str,
        topic: str,
        payload: dict[str, Any],
        *,
        webhook_id: str | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        return await client.post(url, content=body, headers=self.headers(topic, body, webhook_id, secret=secret))
