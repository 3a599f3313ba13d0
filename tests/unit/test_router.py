from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.config.models import RouterConfig
from bus.config.routes import RouteConfig
from bus.errors import ExpressionError
from bus.expr import compile_conditions, compile_expression
from routing.router import Router


def route(name: str, when: str | None, to: list[str], schema: str = "Payment", **extra: Any) -> RouteConfig:
    return RouteConfig.model_validate({"name": name, "from": schema, "when": when, "to": to, **extra})


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


def test_first_match_mode_stops_at_the_first_route_that_holds() -> None:
    first = Router([r.config for r in ROUTER.routes], RouterConfig(mode="first"))
    decision = first.decide("Payment", {"amount": 200_000, "status": "failed", "currency": "usd"}, {})
    assert decision.targets == [("large", "erp"), ("large", "alerts")]
    decision = first.decide("Payment", {"amount": 5, "status": "failed", "currency": "usd"}, {})
    assert decision.targets == [("failed", "support"), ("failed", "erp")]


ORDER = {
    "order_id": "o-1",
    "customer_id": "c-9",
    "currency": "usd",
    "total": 4_500,
    "lines": [{"sku": "A", "quantity": 2, "unit_price": 1000}, {"sku": "B", "quantity": 1, "unit_price": 2500}],
}


def test_transform_converts_between_schemas() -> None:
    router = Router(
        [
            route(
                "invoice",
                None,
                ["books"],
                schema="Order",
                transform={
                    "schema": "Invoice",
                    "map": {"invoice_id": '"INV-" + order_id', "order_id": "order_id", "currency": "currency", "amount": "total"},
                    "templates": {"memo": "Order ${order_id}: ${len(lines)} line(s)"},
                    "defaults": {"due": "2026-12-31"},
                    "key": "customer_id",
                },
            )
        ]
    )
    [(_, out, targets)] = router.decide("Order", ORDER, {}).deliveries()
    assert targets == ("books",)
    assert out.schema == "Invoice"
    assert out.key == "c-9"
    assert out.data == {
        "invoice_id": "INV-o-1",
        "order_id": "o-1",
        "currency": "usd",
        "amount": 4500,
        "memo": "Order o-1: 2 line(s)",
        "due": "2026-12-31",
    }


def test_transform_copy_with_rename_and_drop() -> None:
    router = Router([route("slim", None, ["x"], transform={"rename": {"total": "amount"}, "drop": ["lines"]}, schema="Order")])
    [(_, out, _)] = router.decide("Order", ORDER, {}).deliveries()
    assert out.data == {"order_id": "o-1", "customer_id": "c-9", "currency": "usd", "amount": 4500}
    assert out.schema == "Order"


def test_splitter_emits_one_event_per_element_with_stable_ids() -> None:
    router = Router(
        [
            route(
                "stock",
                None,
                ["wms"],
                schema="Order",
                split={"items": "lines", "as": "line"},
                transform={"schema": "Inventory", "map": {"sku": "line.sku", "quantity_change": "-line.quantity", "reference": "order_id"}},
            )
        ]
    )
    decision = router.decide("Order", ORDER, {"id": "e1"})
    outs = [out for _, out, _ in decision.deliveries()]
    assert [o.data for o in outs] == [
        {"sku": "A", "quantity_change": -2, "reference": "o-1"},
        {"sku": "B", "quantity_change": -1, "reference": "o-1"},
    ]
    assert [o.id_suffix for o in outs] == ["0", "1"]
    assert router.routes[0].stats.emitted == 2
    empty = router.decide("Order", {**ORDER, "lines": []}, {})
    assert empty.outcomes[0].status == "dropped" and empty.targets == []


def test_a_split_element_knows_its_position() -> None:
    transform = {
        "schema": "Inventory",
        "map": {"sku": "line.sku", "quantity_change": "-line.quantity", "reference": 'order_id + "#" + str($index + 1)'},
    }
    router = Router([route("stock", None, ["wms"], schema="Order", split={"items": "lines", "as": "line"}, transform=transform)])
    outs = [out for _, out, _ in router.decide("Order", ORDER, {"id": "e1"}).deliveries()]
    assert [o.data["reference"] for o in outs if o.data] == ["o-1#1", "o-1#2"]


def test_split_of_a_non_list_fails_the_route() -> None:
    router = Router(
        [
            route(
                "stock",
                None,
                ["wms"],
                schema="Order",
                split={"items": "total"},
                transform={"schema": "Inventory", "map": {"sku": "'x'", "quantity_change": "1"}},
            )
        ]
    )
    decision = router.decide("Order", ORDER, {})
    assert decision.outcomes[0].status == "failed"
    assert "gave int, not a list" in decision.outcomes[0].reason


def test_dedup_drops_repeats_within_ttl() -> None:
    router = Router([route("once", None, ["erp"], dedup={"by": "$id", "ttl": "1h"})])
    assert router.decide("Payment", {}, {"id": "a"}).targets == [("once", "erp")]
    repeat = router.decide("Payment", {}, {"id": "a"})
    assert repeat.targets == [] and repeat.outcomes[0].reason == "duplicate of a (dedup)"
    assert router.decide("Payment", {}, {"id": "b"}).targets == [("once", "erp")]
    assert router.routes[0].stats.dropped == 1 and router.routes[0].stats.matched == 3


@pytest.mark.parametrize(
    ("on_missing", "status", "account"), [("null", "emitted", None), ("drop", "dropped", None), ("fail", "failed", None)]
)
def test_enrich_from_a_table(on_missing: str, status: str, account: Any) -> None:
    tables = {"accounts": {"c-9": {"number": "ACC-9"}}}
    router = Router(
        [
            route(
                "bill",
                None,
                ["books"],
                schema="Order",
                enrich=[{"table": "accounts", "key": "customer_id", "into": "acct", "on_missing": on_missing}],
                transform={
                    "schema": "Invoice",
                    "map": {"invoice_id": "order_id", "currency": "currency", "amount": "total", "account": "acct.number"},
                },
            )
        ],
        tables=tables,
    )
    [(_, out, _)] = router.decide("Order", ORDER, {}).deliveries()
    assert out.data is not None and out.data["account"] == "ACC-9"
    unknown = router.decide("Order", {**ORDER, "customer_id": "c-0"}, {})
    assert unknown.outcomes[0].status == status
    if status == "emitted":
        assert unknown.outcomes[0].outputs[0].data["account"] is None  # type: ignore[index]


def test_route_stats_count_time_and_outcomes() -> None:
    router = Router([route("r", "amount > 5", ["x"])])
    for amount in (1, 10, 20):
        router.decide("Payment", {"amount": amount}, {})
    stats = router.routes[0].stats
    assert (stats.matched, stats.emitted, stats.failed) == (2, 2, 0)
    assert stats.seconds > 0


# One schema's conditions run as one generated function (Router._conditions); the reference
# here tests each route's own compiled condition in file order. Both must take the same routes
# and fail the same ones, in either router mode.
EQUIVALENCE_ROUTES = [
    route("big", "amount >= 1000 and currency == 'usd'", ["a"]),
    route("always", None, ["b"]),
    route("arith", "amount % 7 == 0", ["c"]),  # raises on a string amount
    route("text", 'startswith(customer_id, "cus_1") or status == "failed"', ["d"]),
    route("listed", 'currency in ["eur", "gbp"] and not (status == "pending")', ["e"], transform={"drop": ["status"]}),
    route("by_key", '$key == "k1"', ["f"]),
    route("missing", "nested.value > 3", ["g"]),
]

docs = st.fixed_dictionaries(
    {
        "amount": st.one_of(st.integers(-5, 5000), st.text(max_size=3), st.none()),
        "currency": st.sampled_from(["usd", "eur", "gbp", ""]),
        "status": st.sampled_from(["failed", "pending", "succeeded"]),
        "customer_id": st.one_of(st.sampled_from(["cus_1", "cus_12", "cus_2"]), st.none(), st.integers()),
    },
    optional={"nested": st.one_of(st.fixed_dictionaries({"value": st.integers(0, 6)}), st.integers())},
)


@given(doc=docs, key=st.sampled_from(["k1", "k2"]), mode=st.sampled_from(["all", "first"]))
@settings(max_examples=300)
def test_conditions_generated_as_one_function_agree_with_each_condition_alone(doc: dict[str, Any], key: str, mode: str) -> None:
    fused, alone = Router(EQUIVALENCE_ROUTES, RouterConfig(mode=mode)), Router(EQUIVALENCE_ROUTES)
    meta = {"key": key}
    expected: list[tuple[str, str, str]] = []
    for compiled in alone.routes:
        try:
            held = compiled.config.when is None or compile_expression(compiled.config.when)(doc, meta)
        except ExpressionError as exc:
            expected.append((compiled.name, "failed", str(exc)))
        else:
            if not held:
                continue
            outcome = compiled.matched(doc, meta)
            expected.append((compiled.name, outcome.status, outcome.reason))
        if mode == "first":
            break
    got = [(o.route.name, o.status, o.reason) for o in fused.decide("Payment", doc, meta).outcomes]
    assert got == expected


def test_an_expression_nested_past_the_bound_is_refused_at_load_and_one_at_the_bound_compiles() -> None:
    from bus.expr.parser import MAX_DEPTH

    for text in ("(" * 100_000 + "a" + ")" * 100_000, "-" * 100_000 + "a", " or ".join(["a"] * 100_000), "not " * 5000 + "a"):
        with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels"):
            compile_expression(text)
    deepest = compile_expression(" + ".join(["a"] * (MAX_DEPTH - 1)) + " > 0")
    assert deepest({"a": 1}) is True
    chain = compile_conditions([" or ".join(f"x == {i}" for i in range(MAX_DEPTH - 1))] * 50)
    assert chain({"x": MAX_DEPTH - 2}, {}) == list(range(50))
