"""What the config checker adds to start-up: loading a config of 200 routes (conditions,
transforms into other schemas, splits, outbound bodies and URL templates) with the meaning
checked (``bus.config.check``) against loading the same config with its shape checked only,
interleaved in one run, medians of the rounds.

    .venv/bin/python bench/config_check.py [--routes 200] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write


def config(routes: int) -> dict[str, Any]:
    """``routes`` routes over Order and Payment, four shapes of route, one outbound per ten routes."""
    bodies = [  # per shape below: a body over the fields of what its routes send
        {"customer": "customer_id", "currency": "upper(currency)", "lines": "len(lines)"},
        {"invoice": "invoice_id", "amount": "amount", "customer": 'coalesce(customer_id, "none")'},
        {"sku": "sku", "change": "quantity_change", "reference": "reference"},
        {"payment": "payment_id", "amount": "amount", "status": "status"},
    ]
    shapes = [
        {"from": "Order", "when": 'total >= {n} and currency == "usd" and len(lines) > 0'},
        {
            "from": "Order",
            "when": "customer_id != null and total > {n}",
            "transform": {
                "schema": "Invoice",
                "map": {
                    "invoice_id": '"INV-" + order_id',
                    "order_id": "order_id",
                    "customer_id": "customer_id",
                    "currency": "currency",
                    "amount": "total * 2 - {n}",
                },
            },
        },
        {
            "from": "Order",
            "split": {"items": "lines", "as": "line"},
            "transform": {"schema": "Inventory", "map": {"sku": "line.sku", "quantity_change": "-line.quantity", "reference": "order_id"}},
        },
        {"from": "Payment", "when": 'amount > {n} and status in ["failed", "pending"] and exists(customer_id)'},
    ]
    groups = max(1, routes // 40)  # ten routes per outbound
    outbound = [
        {
            "name": f"target-{k}-{g}",
            "type": "http",
            "url": f"http://target-{k}-{g}.local/api/$${{$key}}",
            "headers": {"X-Event-Type": "$${$type}"},
            "body": {"id": "$id", **bodies[k]},
        }
        for k in range(len(shapes))
        for g in range(groups)
    ]
    out = []
    for i in range(routes):
        k = i % len(shapes)
        shape = json.loads(json.dumps(shapes[k]).replace("{n}", str(i)))
        out.append({"name": f"route-{i}", **shape, "to": [f"target-{k}-{(i // len(shapes)) % groups}"]})
    inbound = [
        {
            "name": "orders",
            "type": "http_webhook",
            "path": "/orders",
            "emit": {
                "schema": "Order",
                "map": {"order_id": "id", "customer_id": "customer", "currency": "currency", "total": "total", "lines": "lines"},
            },
        },
        {
            "name": "payments",
            "type": "http_webhook",
            "path": "/payments",
            "emit": {
                "schema": "Payment",
                "map": {
                    "payment_id": "data.object.id",
                    "amount": "data.object.amount",
                    "currency": "data.object.currency",
                    "customer_id": "data.object.customer",
                    "status": "data.object.status",
                    "description": "data.object.description",
                },
            },
        },
    ]
    return {"inbound": inbound, "routes": out, "outbound": outbound}


def cold() -> None:
    """Forget every compiled expression and tree: each load is measured as a process's first."""
    from bus.expr import parser

    parser.compile_expression.cache_clear()  # the models' and the checker's one cache


def main() -> None:
    from bus.adapter_api import AdapterRegistry
    from bus.config.loader import load_config
    from schemas.catalog import SchemaCatalog

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    registry = AdapterRegistry.from_entry_points()
    catalog = SchemaCatalog.load()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bus.yaml"
        path.write_text(json.dumps(config(args.routes), indent=1))  # JSON is YAML
        shape_only, checked = [], []
        loaded = load_config(path, registry, known_schemas=lambda hub: catalog.parsed(), env={})  # warm up, and it must be valid
        assert not loaded.warnings, loaded.warnings
        for _ in range(args.rounds):
            cold()
            started = time.perf_counter()
            load_config(path, registry, known_schemas=lambda hub: catalog.names(), env={})
            shape_only.append(time.perf_counter() - started)
            cold()
            started = time.perf_counter()
            load_config(path, registry, known_schemas=lambda hub: catalog.parsed(), env={})
            checked.append(time.perf_counter() - started)
    base, full = statistics.median(shape_only), statistics.median(checked)
    print(f"config of {args.routes} routes, {len(loaded.outbound)} outbound: medians of {args.rounds} interleaved rounds")
    print(f"  shape only (models, references): {base * 1000:8.1f} ms")
    print(f"  with the checker (types, paths): {full * 1000:8.1f} ms   ratio {full / base:.2f}, checker {1000 * (full - base):.1f} ms")
    write(
        "config_check",
        {"routes": args.routes, "rounds": args.rounds, "shape_only_s": base, "checked_s": full, "ratio": full / base},
    )


if __name__ == "__main__":
    main()
