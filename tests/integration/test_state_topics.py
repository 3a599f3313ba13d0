"""The hub reads its own state topics back at every start: a table's rows, a subscriber's ledger,
a route's aggregate state. A record there it cannot read (written by hand with a console producer,
or by another program given the hub's topics) raised out of the reader: the router or the
delivery worker never started, and started again, and never started. Each such record is now
skipped, said in the log, and the hub goes on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from bus.app.setup import topic_specs
from bus.kafka.clients import make_admin
from bus.kafka.topics import TopicNames, ensure_topics
from tests.support.hub import build_hub, load, payment, payment_hub_config, write_config
from tests.support.target import Target

JUNK = [b"not json", b"[" * 100_000, b"[1, 2]", b'{"upto": "x"}']


async def test_records_the_hub_cannot_read_in_its_state_topics_are_skipped_and_said(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["tables"] = [{"name": "terms", "rows": {"usd": {"days": 30}}}]
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, _, _ = load(path)
    topics = TopicNames(config["kafka"]["topic_prefix"])
    admin = make_admin(loaded.hub.kafka, bootstrap)
    await admin.start()
    try:
        await ensure_topics(admin, topic_specs(loaded, topics))
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for partition in range(config["kafka"]["partitions"]):
            for junk in JUNK:
                await producer.send_and_wait(topics.table("terms"), junk, key=b"eur", partition=partition)
                await producer.send_and_wait(topics.ledger("erp"), junk, partition=partition)
        for junk in JUNK:  # the embedded schema registry's own topic, the operators' pauses, dead-letter marks
            await producer.send_and_wait(topics.schemas, junk, key=b"Payment/9")
            await producer.send_and_wait(topics.schemas, junk, key=b"_config/Payment")
            await producer.send_and_wait(topics.control, junk, key=b"pause/erp")
            await producer.send_and_wait(topics.control, junk, key=b"pause/\xff\xfe")  # a key that is not UTF-8
            await producer.send_and_wait(topics.dead_letter_state, junk, key=b"t/0/0")
    finally:
        await producer.stop()
    caplog.set_level(logging.WARNING)
    try:
        async with build_hub(path) as hub:
            assert hub.web is not None and hub.router is not None and hub.router.tables is not None
            import httpx

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
                assert (await client.post("/hooks/payments", json=payment(1))).status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1, timeout=60)  # routed and delivered
            from bus.deadletters import DeadLetters

            assert await DeadLetters(hub.config.kafka, hub.bootstrap, hub.topics).find("erp") == []  # `bus dlq list` reads on
            # The config's row, and the last record for "eur" (any JSON value is a row); what is not JSON skipped.
            assert hub.router.tables.tables["terms"] == {"usd": {"days": 30}, "eur": {"upto": "x"}}
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "table record" in said and "is not JSON" in said
        assert "ledger record" in said and "cannot be read" in said
        assert "schemas record" in said and "dead-letter mark" in said
    finally:
        await target.stop()


def test_an_aggregate_state_that_cannot_be_read_starts_its_key_anew(caplog: pytest.LogCaptureFixture) -> None:
    from bus.config.routes import AggregateConfig
    from routing.aggregate import Aggregator

    aggregator = Aggregator("counts", AggregateConfig.model_validate({"count": 2, "fields": {"n": "count()"}}))
    good = b'{"offset": 7, "window": 0, "count": 1, "acc": {}}'
    aggregator.load("k1", good, 0)
    for junk in (*JUNK, b'{"offset": "seven", "window": 0, "count": 1, "acc": {}}'):
        aggregator.load("k2", junk, 0)
    assert set(aggregator.state) == {"k1"} and aggregator.state["k1"].offset == 7
    assert "the state of key 'k2' cannot be read" in caplog.text


async def test_a_checkpoint_that_cannot_be_read_gives_way_to_the_one_before_it(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    from bus.config.models import KafkaConfig
    from bus.kafka.clients import make_producer
    from bus.runtime.checkpoints import KafkaCheckpoints
    from tests.support.hub import unique_prefix

    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=unique_prefix())
    topic = TopicNames(kafka.topic_prefix).checkpoints
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    try:
        checkpoints = KafkaCheckpoints(producer, kafka, bootstrap, topic)
        await checkpoints.save("contacts", {"since": "2026-12-01T00:00:00Z"})
        for junk in JUNK[:3]:  # not JSON objects (any object could be a position)
            await producer.send_and_wait(topic, junk, key=b"contacts")
        assert await checkpoints.load("contacts") == {"since": "2026-12-01T00:00:00Z"}
    finally:
        await producer.stop()
    assert "checkpoint of contacts at" in caplog.text and "the one before it is used" in caplog.text
