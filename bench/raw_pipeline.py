"""The latency benchmark's baseline: the hub's three hops done with nothing but aiokafka and raw
sockets, on the same embedded broker with the same Kafka settings. What its p99 is at a load is the
limit on this machine; the hub is judged against it.

    webhook POST -> produce (acks=all) -> answer 202          (the hub: http_webhook inbound)
    consume -> produce the same bytes -> await acks -> commit  (the hub: router, one route)
    consume -> POST to the target -> await answers -> commit   (the hub: http outbound delivery)

No JSON mapping, no Avro, no routes, no ledger, no metrics, no retries: only what any pipeline
with these hops must do. Run by bench/latency.py as a process, like `bus run`:

    .venv/bin/python bench/raw_pipeline.py --http-port P --target-port T [--partitions 4] [--fetch-wait-ms 25] [--linger-ms 1]

``GET`` on the http port answers 200 once both consumers own their partitions (503 before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loadgen import RawSender, RequestProtocol
from bus.config.models import KafkaConfig
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.clients import make_admin, make_consumer, make_producer

INBOUND, OUTBOUND = "raw.inbound", "raw.delivery"
CONCURRENCY = 32  # as the hub bench's outbound: delivery.concurrency 32


class Inbound(RequestProtocol):
    """POST: produce the body keyed by its data.id, answer 202 after the ack. GET: readiness."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    def request(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"GET"):
            self.answer(b"200 OK" if self.pipeline.ready() else b"503 Service Unavailable")
        else:
            task = asyncio.get_running_loop().create_task(self._publish(body))
            self.pipeline.in_flight.add(task)  # the loop holds tasks weakly
            task.add_done_callback(self.pipeline.in_flight.discard)

    async def _publish(self, body: bytes) -> None:
        event = json.loads(body)
        sent = await self.pipeline.producer.send(INBOUND, body, key=event["data"]["id"].encode(), headers=[("id", event["id"].encode())])
        await sent
        self.answer(b"202 Accepted")


class Pipeline:
    def __init__(self, config: KafkaConfig, bootstrap: str, target_port: int) -> None:
        self.producer = make_producer(config, bootstrap)
        self.forwarder = make_consumer(config, bootstrap, INBOUND, group_id="raw-forward")
        self.deliverer = make_consumer(config, bootstrap, OUTBOUND, group_id="raw-deliver")
        self.target = RawSender("127.0.0.1", target_port, "/in")
        self.in_flight: set[asyncio.Task[None]] = set()

    def ready(self) -> bool:
        return bool(self.forwarder.assignment()) and bool(self.deliverer.assignment())

    async def start(self) -> None:
        await self.producer.start()
        await self.forwarder.start()
        await self.deliverer.start()

    async def stop(self) -> None:
        await self.forwarder.stop()
        await self.deliverer.stop()
        await self.producer.stop()
        await self.target.close()

    async def forward(self) -> None:
        """The router's hop: the same bytes to the delivery topic, every ack awaited before the commit."""
        consumer, producer = self.forwarder, self.producer
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                continue
            acks = [await producer.send(OUTBOUND, r.value, key=r.key, headers=list(r.headers)) for rs in batches.values() for r in rs]
            await asyncio.gather(*acks)
            await consumer.commit()

    async def deliver(self) -> None:
        """The delivery hop: POST every record (at most CONCURRENCY at once), then commit."""
        consumer = self.deliverer
        slots = asyncio.Semaphore(CONCURRENCY)

        async def post(body: bytes, event_id: bytes) -> None:
            async with slots:
                status, _ = await self.target.post(body, b"Idempotency-Key: %s\r\n" % event_id)
            if status >= 300:
                raise RuntimeError(f"target answered {status}")

        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                continue
            await asyncio.gather(*(post(r.value, dict(r.headers)["id"]) for rs in batches.values() for r in rs))
            await consumer.commit()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--fetch-wait-ms", type=int, default=None)
    parser.add_argument("--linger-ms", type=int, default=None)
    args = parser.parse_args()
    settings = {"fetch_max_wait_ms": args.fetch_wait_ms, "linger_ms": args.linger_ms}
    config = KafkaConfig(session_timeout_ms=3000, **{k: v for k, v in settings.items() if v is not None})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    async with EmbeddedBroker() as broker:
        admin = make_admin(config, broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(t, args.partitions, 1) for t in (INBOUND, OUTBOUND)])
        await admin.close()
        pipeline = Pipeline(config, broker.bootstrap, args.target_port)
        await pipeline.start()
        server = await loop.create_server(lambda: Inbound(pipeline), "127.0.0.1", args.http_port)
        hops = [asyncio.create_task(pipeline.forward()), asyncio.create_task(pipeline.deliver())]
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait([stop, *hops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.close()
            for task in (stop, *hops):
                task.cancel()
            results = await asyncio.gather(*hops, return_exceptions=True)
            await pipeline.stop()
        failed = [r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)]
        if failed:
            raise failed[0]  # a hop that died is a broken baseline: say so, do not measure on


if __name__ == "__main__":
    asyncio.run(main())
