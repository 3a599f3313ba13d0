"""The hub's Avro codec against raw fastavro, in the same run: encode and decode of canonical
events (Payment, a flat record; Order, with lines), N times each. The raw baseline is
``schemaless_writer``/``schemaless_reader`` with a schema parsed once, plus the same 5-byte
Confluent header; the hub adds what it does per event (header packing, id lookup, error
mapping). Also: decoding a newer writer version into the hub's version (schema resolution),
against raw fastavro doing the same. Issue 6's goal: at least 0.9 of raw.
Writes bench/results/codec-<timestamp>.json.

    .venv/bin/python bench/codec.py [--events 200000]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bus.codec import Codec
from schemas.catalog import SchemaCatalog

HEADER = struct.Struct(">bI")
SAMPLES = {
    "Payment": {
        "payment_id": "pi_123",
        "amount": 150000,
        "currency": "usd",
        "customer_id": "cus_1",
        "status": "succeeded",
        "description": None,
    },
    "Order": {
        "order_id": "o_1",
        "customer_id": "c1",
        "currency": "eur",
        "total": 4200,
        "lines": [{"sku": f"SKU-{i}", "quantity": i + 1, "unit_price": 700} for i in range(3)],
    },
}


def timed(n: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    n = parser.parse_args().events
    catalog = SchemaCatalog.load()
    codec = Codec()
    rows: dict[str, dict[str, float]] = {}
    print(f"{'case':28} {'hub ops/s':>12} {'raw ops/s':>12} {'ratio':>7}")
    for i, (name, record) in enumerate(SAMPLES.items(), start=1):
        schema = catalog.get(name)
        codec.add(name, i, schema.parsed)
        parsed = parse_schema(json.loads(schema.text))
        header = HEADER.pack(0, i)

        def raw_encode(parsed: Any = parsed, header: bytes = header, record: dict[str, Any] = record) -> bytes:
            out = io.BytesIO()
            out.write(header)
            schemaless_writer(out, parsed, record)
            return out.getvalue()

        payload = raw_encode()

        def raw_decode(parsed: Any = parsed, payload: bytes = payload) -> Any:
            return schemaless_reader(io.BytesIO(payload[5:]), parsed, None)

        for case, hub_fn, raw_fn in (
            ("encode", lambda name=name, record=record: codec.encode(name, record), raw_encode),
            ("decode", lambda payload=payload: codec.decode(payload), raw_decode),
        ):
            hub_rate, raw_rate = timed(n, hub_fn), timed(n, raw_fn)
            rows[f"{name}/{case}"] = {"hub_per_s": hub_rate, "raw_per_s": raw_rate, "ratio": hub_rate / raw_rate}
            print(f"{name + ' ' + case:28} {hub_rate:>12,.0f} {raw_rate:>12,.0f} {hub_rate / raw_rate:>7.2f}")

    # A producer on Order v2 (one more field): decoded into the hub's v1 by schema resolution.
    v1 = json.loads(catalog.get("Order").text)
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "channel", "type": ["null", "string"], "default": None, "doc": "x"})
    codec.learn(99, json.dumps(v2))
    out = io.BytesIO()
    out.write(HEADER.pack(0, 99))
    schemaless_writer(out, parse_schema(v2), {**SAMPLES["Order"], "channel": "web"})
    newer = out.getvalue()
    w2, r1 = parse_schema(v2), parse_schema(v1)
    hub_rate = timed(n, lambda: codec.decode(newer))
    raw_rate = timed(n, lambda: schemaless_reader(io.BytesIO(newer[5:]), w2, r1))
    rows["Order v2 -> v1/decode"] = {"hub_per_s": hub_rate, "raw_per_s": raw_rate, "ratio": hub_rate / raw_rate}
    print(f"{'Order v2 -> v1 decode':28} {hub_rate:>12,.0f} {raw_rate:>12,.0f} {hub_rate / raw_rate:>7.2f}")
    worst = min(r["ratio"] for r in rows.values())
    print(f"\nworst hub / raw ratio: {worst:.2f}   (goal in issue 6: >= 0.9)")
    path = Path(__file__).parent / "results" / f"codec-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "benchmark": "codec",
                "date": datetime.now(UTC).isoformat(),
                "events": n,
                "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "versions": {"fastavro": version("fastavro")},
                "results": rows,
                "worst_ratio": worst,
            },
            indent=2,
        )
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
