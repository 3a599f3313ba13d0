"""A local stand-in for a shop's GraphQL Admin API (Shopify-like), served by graphql-core, the
reference implementation's port: the schema in shop-orders-to-soap-erp/shop.graphql is parsed, validated and executed by it, so
the hub meets real GraphQL answers (``data`` and ``errors`` with locations, paths and
``extensions.code``, validation errors for a bad document).

- ``orders(first, after, updatedSince)``: a Relay cursor connection (edges { cursor node },
  pageInfo { hasNextPage endCursor }); cursors are opaque base64 of the position, as graphql-relay
  makes them; ordered by creation, or by (updatedAt, id) when ``updatedSince`` is given.
- ``createInvoice(input)``: stores an invoice; a customer in ``closed_customers`` gets a GraphQL
  error (BAD_USER_INPUT, as Apollo answers), one in ``frozen_customers`` an error whose code is a
  list (as some servers send it, off the spec's convention); a negative amount gets a user error
  in the payload (Shopify's ``userErrors``).
- Throttling as Shopify does it: ``throttle_queries`` / ``throttle_mutations`` answer that many
  queries / mutations 200 with an error whose code is THROTTLED; ``fail_next`` answers that many
  calls 503.
- Bearer token auth: any other token gets 401.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import GraphQLError, build_schema, graphql

from examples.kit.standin import serve

SCHEMA = Path(__file__).resolve().parents[1] / "shop-orders-to-soap-erp" / "shop.graphql"
SDL = SCHEMA.read_text()
TOKEN = "shpat_test_token"


def cursor_of(position: int) -> str:
    return base64.b64encode(f"arrayconnection:{position}".encode()).decode()


def position_of(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().split(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise GraphQLError(f"invalid cursor {cursor!r}", extensions={"code": "BAD_USER_INPUT"}) from exc


@dataclass
class GraphQLShop:
    orders: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    closed_customers: set[str] = field(default_factory=set)
    frozen_customers: set[str] = field(default_factory=set)
    throttle_queries: int = 0
    throttle_mutations: int = 0
    fail_next: int = 0
    cursors_wrap_at: int = 0  # a buggy server: the page reaching this position says there is more, after the first page
    sorted_by_update: bool = True  # False: changed orders come in id order (Shopify's default sortKey), not by updatedAt
    calls: list[dict[str, Any]] = field(default_factory=list)  # variables and outcome of every call
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.schema = build_schema(SDL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def add_order(self, number: int, total: int, updated_at: str, customer: str = "cus_1") -> None:
        self.orders.append(
            {
                "id": f"gid://shop/Order/{number}",
                "number": number,
                "total": total,
                "currency": "EUR",
                "customer": {"id": customer, "name": customer.title(), "email": None},
                "updatedAt": updated_at,
            }
        )

    # -- resolvers (graphql-core's default resolver calls a callable root value with info and arguments)
    def _orders(self, _info: Any, first: int = 50, after: str | None = None, updatedSince: str | None = None) -> dict[str, Any]:
        rows = self.orders
        if updatedSince is not None:
            rows = [o for o in rows if o["updatedAt"] >= updatedSince]
            if self.sorted_by_update:
                rows.sort(key=lambda o: (o["updatedAt"], o["id"]))
        start = position_of(after) + 1 if after else 0
        page = rows[start : start + first]
        edges = [{"cursor": cursor_of(start + i), "node": node} for i, node in enumerate(page)]
        more, end = start + first < len(rows), edges[-1]["cursor"] if edges else None
        if self.cursors_wrap_at and start + first >= self.cursors_wrap_at:
            more, end = True, cursor_of(first - 1)  # back to the end of the first page
        return {
            "edges": edges,
            "pageInfo": {
                "hasNextPage": more,
                "hasPreviousPage": start > 0,
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": end,
            },
        }

    def _create_invoice(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        if input["customerId"] in self.closed_customers:
            raise GraphQLError(f"customer {input['customerId']} is closed; no invoice can be issued", extensions={"code": "BAD_USER_INPUT"})
        if input["customerId"] in self.frozen_customers:
            raise GraphQLError(f"account {input['customerId']} is frozen", extensions={"code": ["ACCOUNT_FROZEN", "BAD_USER_INPUT"]})
        if input["amount"] < 0:
            return {"invoice": None, "userErrors": [{"field": ["input", "amount"], "message": "Amount must be positive"}]}
        invoice = {"id": f"inv_{len(self.invoices) + 1}", **input}
        self.invoices.append(invoice)
        return {"invoice": invoice, "userErrors": []}

    async def _graphql(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"errors": [{"message": "Invalid API key or access token"}]}, status=401)
        body = await request.json()
        variables = body.get("variables") or {}
        if self.fail_next:
            self.fail_next -= 1
            self.calls.append({"variables": variables, "outcome": 503})
            return web.Response(status=503, text="upstream unavailable")
        mutation = str(body.get("query", "")).lstrip().startswith("mutation")
        if (self.throttle_mutations if mutation else self.throttle_queries) > 0:
            if mutation:
                self.throttle_mutations -= 1
            else:
                self.throttle_queries -= 1
            self.calls.append({"variables": variables, "outcome": "THROTTLED"})
            error = {"message": "Throttled", "extensions": {"code": "THROTTLED"}}
            return web.json_response({"errors": [error]}, headers={"Retry-After": "0.2"})
        root = {"orders": self._orders, "createInvoice": self._create_invoice}
        result = await graphql(
            self.schema, body["query"], root_value=root, variable_values=variables, operation_name=body.get("operationName")
        )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
        self.calls.append({"variables": variables, "outcome": "errors" if result.errors else "ok"})
        return web.json_response(answer)

    async def start(self) -> GraphQLShop:
        app = web.Application()
        app.router.add_post("/graphql", self._graphql)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
