"""The same 20 routes as a quixstreams application (bench/router.py's case (c)), run in its own
process (quixstreams wants the main thread for its signal handlers):

    .venv/bin/python bench/quix_router.py BOOTSTRAP SOURCE_TOPIC EVENTS SCHEMA_ID

Each message goes through the hub's own Dispatcher.plan (decode, 20 routes, transforms, encode),
and every copy is produced with quixstreams' producer (acks=all); quixstreams commits at its
checkpoints after flushing the producer (at-least-once), its default. Prints one JSON line:
events, seconds from the first message to the last, CPU seconds. Needs `pip install quixstreams`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quixstreams import Application
from quixstreams.models import TopicConfig

from bench.router import twenty_routes
from bus.codec import Codec
from bus.kafka.topics import TopicNames
from routing.dispatch import Dispatcher
from routing.router import Router
from schemas.catalog import SchemaCatalog


def main() -> None:
    bootstrap, source, n, schema = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    run = sys.argv[5] if len(sys.argv) > 5 else "0"  # a group per round: each reads the topic from the start
    codec = Codec()
    codec.add("Payment", schema, SchemaCatalog.load().get("Payment").parsed)
    dispatcher = Dispatcher(Router(twenty_routes()), codec=codec, topics=TopicNames("bench"))
    with tempfile.TemporaryDirectory() as state:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"bench-quix-{run}",
            auto_offset_reset="earliest",
            auto_create_topics=False,
            use_changelog_topics=False,
            state_dir=state,
            producer_extra_config={"acks": "all", "linger.ms": 5},
            loglevel="WARNING",
        )
        topic = app.topic(
            source, value_deserializer="bytes", key_deserializer="bytes", config=TopicConfig(num_partitions=4, replication_factor=1)
        )
        producer = app.get_producer()
        seen = {"count": 0, "started": 0.0, "cpu": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}

        def route(value: bytes, key: Any, timestamp: int, headers: Any) -> None:
            if not seen["count"]:
                seen["started"], seen["cpu"] = time.perf_counter(), time.process_time()
            for out in dispatcher.plan(key, value, list(headers or ()), "quix"):
                producer.produce(out.topic, out.value, key=out.key, headers=out.headers, partition=out.partition)
            seen["count"] += 1
            if seen["count"] >= n:
                producer.flush()
                seen["seconds"] = time.perf_counter() - seen["started"]
                seen["cpu_seconds"] = time.process_time() - seen["cpu"]
                app.stop()

        app.dataframe(topic).update(route, metadata=True)
        app.run()
    print(json.dumps({"events": seen["count"], "seconds": seen["seconds"], "cpu_seconds": seen["cpu_seconds"]}))


if __name__ == "__main__":
    main()
