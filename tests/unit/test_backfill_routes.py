"""Which routes a backfill of a subscriber goes through: every route that delivers to it, in the
config's order, but those that aggregate (a part of history cannot make their windows again),
which are named with why."""

from __future__ import annotations

from bus.app.backfill import routes_to
from bus.config.routes import RouteConfig


def route(name: str, to: list[str], **more: object) -> RouteConfig:
    return RouteConfig.model_validate({"name": name, "from": "Payment", "to": to, **more})


def test_only_the_subscribers_routes_and_never_an_aggregate() -> None:
    routes = [
        route("all", ["erp", "crm"]),
        route("other", ["erp"]),
        route(
            "daily",
            ["crm"],
            aggregate={"window": "1d", "fields": {"total": "sum(amount)"}},
            transform={"schema": "Payment", "map": {"payment_id": "key", "amount": "total"}},
        ),
        route("large", ["crm"], when="amount > 100"),
    ]
    wanted, left_out = routes_to(routes, "crm")
    assert [r.name for r in wanted] == ["all", "large"]
    assert list(left_out) == ["daily"] and "aggregates" in left_out["daily"]
    assert routes_to(routes, "nobody") == ([], {})
    assert [r.name for r in routes_to(routes, "erp")[0]] == ["all", "other"]
