from __future__ import annotations

from bus.config.models import RouteConfig
from routing.router import Router


def route(name: str, when: str | None, to: list[str], schema: str = "Payment") -> RouteConfig:
    return RouteConfig.model_validate({"name": name, "from": schema, "when": when, "to": to})


ROUTER = Router(
    [
        route("large", "amount >= 100000", ["erp", "alerts"]),
        route("failed", 'status == "failed"', ["support", "erp"]),
        route("everything", None, ["archive"]),
        route("broken", "currency + 1 > 0", ["nowhere"]),
        route("orders", None, ["erp"], schema="Order"),
    ]
)


def test_all_matching_routes_fan_out_each_subscriber_once() -> None:
    decision = ROUTER.decide("Payment", {"amount": 200_000, "status": "failed", "currency": "usd"}, {})
    assert decision.matched == ["large", "failed", "everything"]
    assert decision.targets == [("large", "erp"), ("large", "alerts"), ("failed", "support"), ("everything", "archive")]


def test_non_matching_event_goes_only_where_conditions_hold() -> None:
    decision = ROUTER.decide("Payment", {"amount": 10, "status": "succeeded", "currency": "usd"}, {})
    assert decision.targets == [("everything", "archive")]


def test_failing_condition_is_reported_and_others_still_route() -> None:
    decision = ROUTER.decide("Payment", {"amount": 10, "status": "ok", "currency": "usd"}, {})
    assert [name for name, _ in decision.failed] == ["broken"]
    assert "cannot evaluate" in str(decision.failed[0][1])
    assert decision.targets == [("everything", "archive")]


def test_routes_are_per_schema() -> None:
    assert ROUTER.schemas == ["Order", "Payment"]
    assert ROUTER.decide("Order", {}, {}).targets == [("orders", "erp")]
    assert ROUTER.decide("Customer", {}, {}).targets == []
    assert ROUTER.subscribers() == ["alerts", "archive", "erp", "nowhere", "support"]
