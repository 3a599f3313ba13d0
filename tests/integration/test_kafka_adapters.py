"""The ``kafka`` adapters on the real embedded broker: a foreign JSON topic and a foreign Avro topic
(Confluent wire format, its schema in the hub's embedded registry) bridged into Payment events,
bad values parked with where they came from, a restart that resumes from the committed offsets,
and events published out as JSON and as Avro that a plain fastavro reader decodes."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError

from adapters.kafka.config import KafkaInboundConfig, KafkaOutboundConfig
from adapters.kafka.inbound import KafkaInbound
from adapters.kafka.outbound import KafkaOutbound
from bus.app.hub import Hub
from bus.config.models import KafkaConfig
from bus.kafka.clients import make_admin
from bus.kafka.reader import read_topic
from bus.kafka.registry_client import RegistryClient
from bus.kafka.topics import TopicSpec, ensure_topics
from bus.metrics import INBOUND_EVENTS
from bus.ports import free_port
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.proxy import KafkaProxy
from tests.support.sink import bare_context
from tests.support.wait import until

LEGACY_PAYMENT = {
    "type": "record",
    "name": "LegacyPayment",
    "namespace": "erp",
    "fields": [{"name": "txn", "type": "string"}, {"name": "cents", "type": "long"}, {"name": "ccy", "type": "string"}],
}
PARTNER_PAYMENT = {
    "type": "record",
    "name": "PartnerPayment",
    "namespace": "partner",
    "fields": [{"name": "ref", "type": "string"}, {"name": "minor", "type": "long"}],
}


def wire(schema_id: int, record: dict[str, Any], schema: dict[str, Any] = LEGACY_PAYMENT) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def bridged(hub: Hub) -> Counter[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


async def test_bridge_in_and_publish_out_as_json_and_avro(tmp_path: Path, bootstrap: str) -> None:
    prefix = unique_prefix()
    json_in, avro_in, json_out, avro_out = (f"{prefix}.foreign.{n}" for n in ("payments", "payments-avro", "out-json", "out-avro"))
    admin = make_admin(KafkaConfig(bootstrap=bootstrap), bootstrap)
    await admin.start()
    try:
        await ensure_topics(admin, [TopicSpec(t, 2, 1) for t in (json_in, avro_in, json_out, avro_out)])
    finally:
        await admin.close()
    schema_file = tmp_path / "partner_payment.avsc"
    schema_file.write_text(json.dumps(PARTNER_PAYMENT))
    ops_port = free_port()
    registry = f"http://127.0.0.1:{ops_port}/registry"
    emit = {"schema": "Payment", "key": "txn", "map": {"payment_id": "txn", "amount": "cents", "currency": "lower(ccy)"}}
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": ops_port, "tokens": [{"name": "partner-avro", "token": "tok-partner", "scope": "write"}]},
        "inbound": [
            {"name": "erp-json", "type": "kafka", "bootstrap": bootstrap, "topics": [json_in], "session_timeout_ms": 3000, "emit": emit},
            {
                "name": "erp-avro",
                "type": "kafka",
                "bootstrap": bootstrap,
                "topics": [avro_in],
                "format": "avro",
                "registry_url": registry,
                "session_timeout_ms": 3000,
                "emit": emit,
            },
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["partner-json", "partner-avro"]}],
        "outbound": [
            {"name": "partner-json", "type": "kafka", "bootstrap": bootstrap, "topic": json_out, "key": "payment_id"},
            {
                "name": "partner-avro",
                "type": "kafka",
                "bootstrap": bootstrap,
                "topic": avro_out,
                "format": "avro",
                "registry_url": registry,
                "registry_token": "tok-partner",  # the embedded registry's writes need a token
                "schema_file": str(schema_file),
                "body": {"ref": "payment_id", "minor": "amount"},
            },
        ],
    }
    path = write_config(tmp_path / "bus.yaml", config)

    good = [json.dumps({"txn": f"j{i}", "cents": 100 + i, "ccy": "EUR"}).encode() for i in range(30)]
    await produce(bootstrap, json_in, [*good[:15], b"{not json", json.dumps({"txn": "j-bad", "ccy": "EUR"}).encode(), *good[15:]])
    async with build_hub(path) as hub:
        client = RegistryClient(registry, token="tok-partner")  # the legacy producer's registration needs a write token
        try:
            schema_id = await client.register(f"{avro_in}-value", json.dumps(LEGACY_PAYMENT))
        finally:
            await client.close()
        avro_values = [wire(schema_id, {"txn": f"a{i}", "cents": 500 + i, "ccy": "USD"}) for i in range(10)]
        await produce(bootstrap, avro_in, [*avro_values[:5], struct.pack(">bI", 0, 987654) + b"\x02", *avro_values[5:]])
        await until(lambda: sum(int(a.progress()["bridged"]) for a in hub.inbound) == 32 + 11, "every value to be taken", timeout=60)
        seen = await bridged(hub)
        assert len(seen) == 40 and all(n == 1 for n in seen.values())
        assert f"{json_in}:0:0" in seen or f"{json_in}:1:0" in seen  # default ids name topic, partition and offset
        parked_json = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("erp-json"))
        reasons = sorted(dict(r.headers)["bus_error"].decode() for r in parked_json)
        assert len(reasons) == 2 and "not JSON" in reasons[1] and "amount" in reasons[0], reasons
        assert {"kafka_topic", "kafka_partition", "kafka_offset"} <= set(dict(parked_json[0].headers))
        parked_avro = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("erp-avro"))
        assert len(parked_avro) == 1 and b"987654" in dict(parked_avro[0].headers)["bus_error"]

        # Paused and resumed (its adapter stopped and started, as a supervisor's restart does): a
        # schema the bridge has not seen yet is still fetched from the registry. Its client was
        # left closed by the stop, and every new schema id refused for good.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ops_port}/api/v1", headers={"Authorization": "Bearer tok-partner"}
        ) as api:
            assert (await api.post("/inbound/erp-avro/pause")).status_code == 202
            await until(lambda: hub.source_pauses.paused_by("erp-avro") is not None, "the pause obeyed")
            assert (await api.post("/inbound/erp-avro/resume")).status_code == 202
            await until(lambda: hub.source_pauses.paused_by("erp-avro") is None, "the resume obeyed")
        evolved = {**LEGACY_PAYMENT, "fields": [*LEGACY_PAYMENT["fields"], {"name": "memo", "type": ["null", "string"], "default": None}]}
        client = RegistryClient(registry, token="tok-partner")
        try:
            evolved_id = await client.register(f"{avro_in}-value", json.dumps(evolved))
        finally:
            await client.close()
        assert evolved_id != schema_id
        await produce(bootstrap, avro_in, [wire(evolved_id, {"txn": "e1", "cents": 9, "ccy": "USD", "memo": "new"}, evolved)])
        avro_bridge = next(a for a in hub.inbound if a.config.name == "erp-avro")
        await until(lambda: int(avro_bridge.progress()["bridged"]) == 12, "the value of the new schema", timeout=30)
        assert len(await bridged(hub)) == 41
        parked_avro = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("erp-avro"))
        assert len(parked_avro) == 1, [dict(r.headers)["bus_error"] for r in parked_avro]

    # Stopped: more values arrive; the restart reads only those (offsets were committed).
    await produce(bootstrap, json_in, [json.dumps({"txn": f"k{i}", "cents": 7, "ccy": "EUR"}).encode() for i in range(10)])
    async with build_hub(path) as hub:
        await until(lambda: hub.inbound[0].progress()["bridged"] == 10, "the values written while the hub was down", timeout=60)
        seen = await bridged(hub)
        assert len(seen) == 51 and sum(seen.values()) == 51, "a value was bridged twice after a clean restart"
        out_json: list[Any] = []
        out_avro: list[Any] = []

        async def outputs() -> bool:
            nonlocal out_json, out_avro
            out_json = await read_topic(hub.config.kafka, hub.bootstrap, json_out)
            out_avro = await read_topic(hub.config.kafka, hub.bootstrap, avro_out)
            return len({dict(r.headers)["ce_id"] for r in out_json}) == 51 and len({dict(r.headers)["ce_id"] for r in out_avro}) == 51

        for _ in range(150):
            if await outputs():
                break
            await asyncio.sleep(0.2)
        assert await outputs(), (len(out_json), len(out_avro))
    first = next(r for r in out_json if r.key == b"j0")
    sent = json.loads(first.value)
    assert sent == {"payment_id": "j0", "amount": 100, "currency": "eur", "customer_id": None, "status": "succeeded", "description": None}
    value = next(r.value for r in out_avro if dict(r.headers)["ce_id"] == dict(first.headers)["ce_id"])
    assert value[0] == 0  # the Confluent wire format: magic byte, then the id the registry gave
    assert schemaless_reader(io.BytesIO(value[5:]), parse_schema(PARTNER_PAYMENT)) == {"ref": "j0", "minor": 100}


async def test_records_a_foreign_topics_retention_removed_unread_are_said_as_lost(tmp_path: Path, bootstrap: str) -> None:
    """The hub was down (or behind) for longer than the foreign topic's retention: Kafka removed
    records it had not read, and the consumer went on from the first record left, with nothing
    said. Now the records lost are counted and named (WARNING, progress, the console's attention);
    the bridge goes on. The foreign topic is on librdkafka's mock cluster, whose partitions can
    have records removed as retention does (the embedded broker cannot)."""
    from tests.support.mock_cluster import MockCluster

    with MockCluster(brokers=1) as foreign:
        topic = "erp.payments"
        foreign.create_topics([TopicSpec(topic, 1, 1)], replication_factor=1)
        emit = {"schema": "Payment", "key": "txn", "map": {"payment_id": "txn", "amount": "cents", "currency": "lower(ccy)"}}
        config = {
            "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
            "http": {"host": "127.0.0.1", "port": 0},
            "ops": {"host": "127.0.0.1", "port": 0},
            "inbound": [
                {
                    "name": "erp",
                    "type": "kafka",
                    "bootstrap": foreign.bootstrap,
                    "topics": [topic],
                    "session_timeout_ms": 3000,
                    "emit": emit,
                }
            ],
        }
        path = write_config(tmp_path / "bus.yaml", config)

        def values(first: int, last: int) -> list[bytes]:
            return [json.dumps({"txn": f"t{i}", "cents": i, "ccy": "EUR"}).encode() for i in range(first, last)]

        await produce(foreign.bootstrap, topic, values(0, 10))
        async with build_hub(path) as hub:
            await until(lambda: hub.inbound[0].progress()["bridged"] == 10, "the first ten", timeout=60)
            assert "lost_to_retention" not in hub.inbound[0].progress()
        await produce(foreign.bootstrap, topic, values(10, 20))  # the hub is down
        foreign.delete_records(topic, 0, 15)  # retention removes 10..14 before the hub reads them
        async with build_hub(path) as hub:
            erp = hub.inbound[0]
            await until(lambda: erp.progress()["bridged"] == 5, "the five left", timeout=60)
            assert erp.progress()["lost_to_retention"] == 5
            assert "5 record(s) of erp.payments were removed by the topic's retention before the hub read them" in erp.attention()
            assert "erp.payments/0 offsets 10 to 14" in erp.attention()
            seen = await bridged(hub)
        assert sorted(seen) == sorted(f"{topic}:0:{i}" for i in [*range(10), *range(15, 20)])


BRIDGE_EMIT = {"schema": "Payment", "key": "txn", "map": {"payment_id": "txn", "amount": "cents", "currency": "lower(ccy)"}}


async def one_partition_topic(bootstrap: str, topic: str) -> None:
    admin = make_admin(KafkaConfig(bootstrap=bootstrap), bootstrap)
    await admin.start()
    try:
        await ensure_topics(admin, [TopicSpec(topic, 1, 1)])
    finally:
        await admin.close()


def bridge_config(bootstrap: str, prefix: str, topic: str, **inbound: Any) -> dict[str, Any]:
    """A hub whose one inbound, ``crm``, bridges ``topic`` of the same broker into Payment events."""
    bridge = {"name": "crm", "type": "kafka", "bootstrap": bootstrap, "topics": [topic], "session_timeout_ms": 3000, "emit": BRIDGE_EMIT}
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [bridge | inbound],
    }


def payment_value(txn: str, cents: int) -> bytes:
    return json.dumps({"txn": txn, "cents": cents, "ccy": "EUR"}).encode()


async def test_tombstones_are_parked_saying_so_or_passed_over_as_configured(tmp_path: Path, bootstrap: str) -> None:
    """A compacted topic's deletes (Debezium writes one after each delete) are records with no
    value. They were parked as values that are not JSON ("Expecting value"); now the dead letter
    says what it is, and ``tombstones: skip`` passes over them, counted."""
    prefix = unique_prefix()
    topic = f"{prefix}.foreign.customers"
    await one_partition_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, None if i == 1 else payment_value(f"t{i}", i), key=f"c{i}".encode())
    finally:
        await producer.stop()

    async with build_hub(write_config(tmp_path / "parked.yaml", bridge_config(bootstrap, prefix, topic))) as hub:
        await until(lambda: hub.inbound[0].progress()["bridged"] == 4, "the four records", timeout=60)
        parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("crm"))
        assert len(parked) == 1
        headers = dict(parked[0].headers)
        assert b"a tombstone (a record with no value, key 'c1')" in headers["bus_error"] and headers["kafka_offset"] == b"1"
        assert sorted(await bridged(hub)) == [f"{topic}:0:{i}" for i in (0, 2, 3)]

    skipping = bridge_config(bootstrap, prefix, topic, tombstones="skip", group=f"{prefix}-skip")  # a group of its own: read again
    async with build_hub(write_config(tmp_path / "skipped.yaml", skipping)) as hub:
        crm = hub.inbound[0]
        await until(lambda: crm.progress()["bridged"] == 3, "the three values", timeout=60)
        assert crm.progress()["tombstones_skipped"] == 1
        assert INBOUND_EVENTS.labels("crm", "skipped")._value.get() >= 1
        assert len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("crm"))) == 1  # none added


async def test_a_topic_written_compressed_with_any_kafka_codec_is_bridged(tmp_path: Path, bootstrap: str) -> None:
    """Java producers compress with lz4, snappy or zstd as often as not (a cluster's
    `compression.type` may set it for every topic). aiokafka reads those only with cramjam
    installed, which the hub did not ask for: such a topic was never read, the bridge reading
    the same batch again every second, for good. Written here by librdkafka (confluent-kafka),
    which has every codec built in."""
    from confluent_kafka import Producer

    prefix = unique_prefix()
    topic = f"{prefix}.foreign.compressed"
    await one_partition_topic(bootstrap, topic)
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    for i, codec in enumerate(codecs):
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 0})
        for j in range(3):
            producer.produce(topic, payment_value(f"{codec}-{j}", i * 10 + j))
        assert producer.flush(30) == 0
        del producer  # its threads end with it, not at the end of the session
    emit = {**BRIDGE_EMIT, "id": "txn"}
    async with build_hub(write_config(tmp_path / "bus.yaml", bridge_config(bootstrap, prefix, topic, emit=emit))) as hub:
        await until(lambda: hub.inbound[0].progress()["bridged"] == 12, "the twelve records", timeout=30)
        assert sorted(await bridged(hub)) == sorted(f"{codec}-{j}" for codec in codecs for j in range(3))


async def test_json_in_confluents_wire_format_is_read_and_avro_in_it_is_parked_saying_so(tmp_path: Path, bootstrap: str) -> None:
    """Confluent's JSON Schema serializer puts a zero byte and the schema's id before the JSON:
    every such value was parked as "not JSON". No JSON starts with a zero byte, so the header is
    dropped. Avro in that format, on a bridge set to JSON, is parked saying to set format: avro."""
    prefix = unique_prefix()
    topic = f"{prefix}.foreign.json-schema"
    await one_partition_topic(bootstrap, topic)
    avro = wire(42, {"txn": "a1", "cents": 5, "ccy": "USD"})
    await produce(bootstrap, topic, [struct.pack(">bI", 0, 7) + payment_value("j1", 1), avro, payment_value("j2", 2)])
    emit = {**BRIDGE_EMIT, "id": "txn"}
    async with build_hub(write_config(tmp_path / "bus.yaml", bridge_config(bootstrap, prefix, topic, emit=emit))) as hub:
        await until(lambda: hub.inbound[0].progress()["bridged"] == 3, "the three records", timeout=30)
        assert sorted(await bridged(hub)) == ["j1", "j2"]
        [parked] = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("crm"))
        said = dict(parked.headers)["bus_error"].decode()
        assert said.startswith("value is not JSON after a Confluent wire-format header (schema id 42: Avro needs format: avro)"), said


async def test_a_start_cancelled_while_it_joins_its_group_leaves_no_consumer_open(bootstrap: str) -> None:
    """A hub that stops while a bridge's resume (or a restart) is still joining the source's group
    cancels that start: its consumer is closed, not left open. An open one warns when it is collected,
    which pytest here turns into a failure."""
    topic = f"cancelled-{unique_prefix()}"
    await one_partition_topic(bootstrap, topic)
    config = KafkaInboundConfig.model_validate(
        {
            "type": "kafka",
            "name": "bridge",
            "bootstrap": bootstrap,
            "topics": [topic],
            "session_timeout_ms": 6000,
            "emit": {"schema": "Payment"},
        }
    )

    adapter = KafkaInbound(config, bare_context("bridge"))
    starting = asyncio.create_task(adapter.start())
    await asyncio.sleep(0.3)  # a group's first join takes about half the session timeout on the embedded broker
    assert not starting.done(), "the start should still be joining"
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    gc.collect()  # the consumer, had it been left open, warns now
    await adapter.stop()


async def test_the_hub_and_its_bridges_name_themselves_to_each_cluster_by_their_client_id(bootstrap: str) -> None:
    """What a cluster's owners see in their request logs and match quotas by: not aiokafka's version."""
    port = bootstrap.rsplit(":", 1)[1]
    proxy = KafkaProxy(free_port(), int(port))  # the bootstrap connection goes through it (the broker advertises itself)
    await proxy.start()
    try:
        through = f"127.0.0.1:{proxy.listen_port}"
        topic = f"named-{unique_prefix()}"
        await one_partition_topic(bootstrap, topic)
        inbound = KafkaInbound(
            KafkaInboundConfig.model_validate(
                {
                    "type": "kafka",
                    "name": "bridge",
                    "bootstrap": through,
                    "topics": [topic],
                    "client_id": "partner-quota-7",
                    "session_timeout_ms": 3000,
                    "emit": {"schema": "Payment"},
                }
            ),
            bare_context("bridge"),
        )
        outbound = KafkaOutbound(
            KafkaOutboundConfig.model_validate({"type": "kafka", "name": "out", "bootstrap": through, "topic": topic}), bare_context("out")
        )
        hubs = make_admin(KafkaConfig(bootstrap=through, client_id="integration-bus-pod-1"), through)
        for client in (inbound, outbound):
            await client.start()
            await client.stop()
        await hubs.start()
        await hubs.close()
        assert set(proxy.client_ids) == {"partner-quota-7", "integration-bus", "integration-bus-pod-1"}, proxy.client_ids
    finally:
        await proxy.stop()
    with pytest.raises(ValidationError, match="client_id"):
        KafkaConfig(client_id="has spaces")


def test_an_avro_schema_file_that_cannot_be_used_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Read when the config loads: a missing or broken .avsc was found only at the adapter's start."""
    base = {"type": "kafka", "name": "partner", "bootstrap": "127.0.0.1:9092", "topic": "t", "format": "avro"}
    base["registry_url"] = "http://127.0.0.1:8081"
    broken, binary = tmp_path / "broken.avsc", tmp_path / "binary.avsc"
    broken.write_text(json.dumps({"type": "record", "name": "P", "fields": [{"name": "a", "type": "nope"}]}))
    binary.write_bytes(b"\x30\x82\xff\xfe")
    for path, said in (
        (tmp_path / "none.avsc", "cannot read"),
        (broken, "is not an Avro schema"),
        (binary, "is not an Avro schema"),
    ):
        with pytest.raises(ValueError, match=said):
            KafkaOutboundConfig.model_validate({**base, "schema_file": str(path)})
    good = tmp_path / "good.avsc"
    good.write_text(json.dumps(PARTNER_PAYMENT))
    assert KafkaOutboundConfig.model_validate({**base, "schema_file": str(good)}).schema_file == good
