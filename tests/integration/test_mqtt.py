"""The mqtt adapters against the real Mosquitto on this machine and the real embedded broker:
sensor readings in, alerts out; a bad payload is kept with its reason; a hub restarted mid-stream
picks up what its persistent session held."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.config import MqttOutboundConfig
from adapters.mqtt.connection import connect
from adapters.mqtt.outbound import MqttOutbound
from bus.adapter_api import Context, RetryableError
from bus.app.cli import main
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, reading, unique_prefix, write_config
from tests.support.memory import resident_peak_mb, resident_peak_reset, the_cut_letter
from tests.support.silent_server import left_running_after_cancelling, silent_server
from tests.support.target import Target
from tests.support.wait import healthy


@pytest.fixture(autouse=True)
def mosquitto() -> None:
    require_service("Mosquitto", "127.0.0.1", 1883)


def config(bootstrap: str, target: Target, run: str, prefix: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "sensors",
                "type": "mqtt",
                "host": "127.0.0.1",
                "topics": [f"t{run}/sensors/+/usage"],
                "client_id": f"bus-test-{run}",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "device",
                    "map": {"payment_id": "id", "amount": "value", "currency": '"usd"', "customer_id": "device"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp", "alerts"]}],
        "outbound": [
            {"name": "erp", "type": "http", "url": f"{target.url}/erp"},
            {
                "name": "alerts",
                "type": "mqtt",
                "host": "127.0.0.1",
                "topic": f"t{run}/alerts/$${{customer_id}}",
                "body": {"id": "$id", "v": "amount"},
            },
        ],
    }


async def test_sensors_in_alerts_out_bad_payload_kept_and_restart_resumes(tmp_path: Path, bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, run, unique_prefix()))
    alerts: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client("127.0.0.1", 1883) as listener, aiomqtt.Client("127.0.0.1", 1883) as sensor:
        await listener.subscribe(f"t{run}/alerts/#", qos=1)

        async def listen() -> None:
            async for message in listener.messages:
                alerts.append((str(message.topic), json.loads(message.payload)))  # type: ignore[arg-type]

        listening = asyncio.create_task(listen())
        try:
            async with build_hub(path) as hub:
                for i in range(50):
                    payload = b"not json" if i == 7 else json.dumps({"id": f"r{i}", "device": f"d{i % 4}", "value": i}).encode()
                    await sensor.publish(f"t{run}/sensors/d{i % 4}/usage", payload, qos=1)
                await target.wait_for(lambda: len(target.accepted) == 49)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("sensors"))
                assert [r.value for r in parked] == [b"not json"]
                headers = dict(parked[0].headers)
                assert (
                    headers["bus_error"].startswith(b"invalid JSON") and headers["bus_origin"] == f"mqtt:t{run}/sensors/d3/usage".encode()
                )

            # Published while the hub is down: the persistent session keeps them for it.
            for i in range(50, 60):
                await sensor.publish(
                    f"t{run}/sensors/d{i % 4}/usage", json.dumps({"id": f"r{i}", "device": f"d{i % 4}", "value": i}), qos=1
                )
            async with build_hub(path):
                await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 59)
                for _ in range(100):
                    if len({a[1]["id"] for a in alerts}) >= 59:
                        break
                    await asyncio.sleep(0.1)
        finally:
            listening.cancel()
            await target.stop()

    assert {c.body["payment_id"] for c in target.accepted} == {f"r{i}" for i in range(60) if i != 7}
    by_id = {body["id"]: (topic, body) for topic, body in alerts}
    assert len(by_id) == 59
    topic, body = next(iter(by_id.values()))
    assert topic == f"t{run}/alerts/d{body['v'] % 4}"


async def test_a_host_naming_a_clusters_nodes_starts_on_one_that_answers_and_follows_a_lost_node_to_the_next(
    tmp_path: Path, bootstrap: str
) -> None:
    """`host` names three nodes: the first never answers, the next two are this machine's
    Mosquitto behind proxies the test controls (one broker: the session is the cluster's). The
    hub starts on the second; when that node is lost (its connections cut, new ones refused), the
    inbound and the outbound connect to the third and nothing published is lost."""
    from bus.ports import free_port
    from tests.support.proxy import TcpProxy

    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    lost, kept = TcpProxy(free_port(), 1883), TcpProxy(free_port(), 1883)
    await lost.start()
    await kept.start()
    cfg = config(bootstrap, target, run, unique_prefix())
    nodes = f"127.0.0.1:{free_port()},127.0.0.1:{lost.listen_port},127.0.0.1:{kept.listen_port}"
    cfg["inbound"][0]["host"] = cfg["outbound"][1]["host"] = nodes
    alerts: set[str] = set()
    try:
        async with aiomqtt.Client("127.0.0.1", 1883) as listener, aiomqtt.Client("127.0.0.1", 1883) as sensor:
            await listener.subscribe(f"t{run}/alerts/#", qos=1)

            async def listen() -> None:
                async for message in listener.messages:
                    alerts.add(json.loads(message.payload)["id"])  # type: ignore[arg-type]

            async def publish(first: int, last: int) -> None:
                for i in range(first, last):
                    body = json.dumps({"id": f"r{i}", "device": f"d{i % 4}", "value": i})
                    await sensor.publish(f"t{run}/sensors/d{i % 4}/usage", body, qos=1)

            listening = asyncio.create_task(listen())
            try:
                async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
                    await publish(0, 20)
                    await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 20)
                    assert lost._writers and not kept._writers, "started on the first node that answers"
                    lost.cut = True  # the node is lost
                    lost.sever()
                    await publish(20, 40)
                    await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 40, timeout=60)
                    for _ in range(300):
                        if len(alerts) >= 40:
                            break
                        await asyncio.sleep(0.1)
                    assert kept._writers, "reconnected through the third node"
                    for adapter in (reading(hub), hub.outbound[1]):
                        assert (await healthy(adapter)).ok, adapter.config.name
            finally:
                listening.cancel()
        assert {c.body["payment_id"] for c in target.accepted} == {f"r{i}" for i in range(40)}
        assert alerts == {f"r{i}" for i in range(40)}
    finally:
        await lost.stop()
        await kept.stop()
        await target.stop()


def test_a_host_list_that_cannot_be_read_is_a_config_error() -> None:
    for host, said in (
        ("mqtt-0,mqtt-1:x", "broker 'mqtt-1:x': the port must be a number"),
        ("mqtt-0:99999", "broker 'mqtt-0:99999': the port must be a number from 1 to 65535"),  # was taken, to fail at connect
        ("mqtt-0:0", "the port must be a number from 1"),
        ("mqtt-0,,mqtt-1", "empty broker"),
    ):
        with pytest.raises(ValueError, match=said):
            MqttOutboundConfig.model_validate({"type": "mqtt", "name": "alerts", "host": host, "topic": "t"})


async def test_mqtt5_carries_the_trace_both_ways_and_keeps_its_session(tmp_path: Path, bootstrap: str) -> None:
    """MQTT 5: a device's `traceparent` user property continues into the hub's event and out to
    the hub's own MQTT publishes; the persistent session (a session expiry, MQTT 5's way) keeps
    what arrives while the hub is down."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    cfg = config(bootstrap, target, run, unique_prefix())
    cfg["inbound"][0]["protocol"] = "5"
    cfg["outbound"][1]["protocol"] = "5"
    path = write_config(tmp_path / "bus.yaml", cfg)
    traces = {f"r{i}": uuid.uuid4().hex for i in range(20)}

    async def publish(client: aiomqtt.Client, first: int, last: int) -> None:
        for i in range(first, last):
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("traceparent", f"00-{traces[f'r{i}']}-00f067aa0ba902b7-01")]
            body = json.dumps({"id": f"r{i}", "device": f"d{i % 2}", "value": i}).encode()
            await client.publish(f"t{run}/sensors/d{i % 2}/usage", body, qos=1, properties=properties)

    alerts: dict[str, str] = {}
    async with (
        aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5) as device,
        aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5) as watcher,
    ):
        await watcher.subscribe(f"t{run}/alerts/#", qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                [(_name, value)] = [p for p in message.properties.UserProperty if p[0] == "traceparent"]  # type: ignore[union-attr]
                alerts[json.loads(message.payload)["id"]] = value.split("-")[1]

        watching = asyncio.create_task(watch())
        try:
            async with build_hub(path):
                await publish(device, 0, 10)
                await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == 10)
            await publish(device, 10, 20)  # the hub is down: its session keeps these
            async with build_hub(path):
                await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == 20)
                for _ in range(100):
                    if len(alerts) == 20:
                        break
                    await asyncio.sleep(0.1)
        finally:
            watching.cancel()
            await target.stop()
    at_target = {c.headers["Idempotency-Key"]: c.headers["traceparent"].split("-")[1] for c in target.accepted}
    assert at_target == traces  # each event continues its device's trace
    assert alerts == traces  # and so does each MQTT 5 publish out


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_message_too_large_to_read_is_parked_from_its_start_and_not_given_again(
    tmp_path: Path, bootstrap: str, protocol: str
) -> None:
    """A broker takes messages of up to 256 MiB and paho read each whole (three times its size in
    memory): one took the hub past its memory limit, and the persistent session gave it again at
    every start. It is now read past, its start parked with its size; the messages after it flow."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    cfg = config(bootstrap, target, run, unique_prefix())
    cfg["inbound"][0]["protocol"] = protocol
    cfg["outbound"] = cfg["outbound"][:1]
    cfg["routes"][0]["to"] = ["erp"]
    path = write_config(tmp_path / "bus.yaml", cfg)
    head = json.dumps({"id": "big", "device": "d1", "value": 1, "pad": ""}).encode()[:-2]
    big = tmp_path / "big.json"
    big.write_bytes(head + b"a" * (100_000_000 - len(head) - 2) + b'"}')
    mqtt_version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    try:
        async with aiomqtt.Client("127.0.0.1", 1883, protocol=mqtt_version) as sensor:
            async with build_hub(path) as hub:
                resident_peak_reset()
                before = resident_peak_mb()
                # Sent from another process: this one's peak is the hub's alone.
                version = "5" if protocol == "5" else "mqttv311"
                sent = await asyncio.create_subprocess_exec(
                    "mosquitto_pub", "-V", version, "-q", "1", "-t", f"t{run}/sensors/d1/usage", "-f", str(big)
                )  # fmt: skip
                assert await sent.wait() == 0
                await sensor.publish(f"t{run}/sensors/d2/usage", json.dumps({"id": "small", "device": "d2", "value": 2}), qos=1)
                await target.wait_for(lambda: len(target.accepted) == 1, timeout=60)
                grown = resident_peak_mb() - before
                headers = await the_cut_letter(hub, "sensors", 100_000_000, head)
                assert headers["bus_origin"] == f"mqtt:t{run}/sensors/d1/usage".encode()
                assert target.accepted[0].body["payment_id"] == "small"  # the message after it flowed
                # Read whole, the message took about 300 MB; read past, a few MiB of buffers.
                assert grown < 60, f"the hub's peak resident set grew by {grown:.0f} MB for a 100 MB message"
            # Acknowledged: a restart of the persistent session does not get it again.
            async with build_hub(path) as hub:
                # A message the session held would come before this one, sent after the restart.
                await sensor.publish(f"t{run}/sensors/d2/usage", json.dumps({"id": "after", "device": "d2", "value": 3}), qos=1)
                await target.wait_for(lambda: len(target.accepted) == 2, timeout=60)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("sensors"))
                assert len(parked) == 1, [dict(r.headers)["bus_error"] for r in parked]
    finally:
        await target.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_retained_message_is_taken_once_not_at_every_start(protocol: str, tmp_path: Path, bootstrap: str) -> None:
    """Devices keep their last state as a retained message. The broker sends retained messages
    again whenever a client subscribes, and the hub subscribes at every start and reconnect: each
    start published every retained message again, as a new event (a ticket opened again). Now a
    hub whose persistent session the broker kept takes what it missed from its session and not the
    re-sent retained messages; a message published while it was down still arrives, once."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    cfg = config(bootstrap, target, run, unique_prefix())
    cfg["inbound"][0]["protocol"] = protocol
    path = write_config(tmp_path / "bus.yaml", cfg)
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311

    def deliveries() -> list[str]:
        return sorted(c.headers["Idempotency-Key"] for c in target.accepted)

    try:
        async with aiomqtt.Client("127.0.0.1", 1883, protocol=version) as device:
            body = json.dumps({"id": "state-1", "device": "d1", "value": 7}).encode()
            await device.publish(f"t{run}/sensors/d1/usage", body, qos=1, retain=True)  # before the hub ever ran
            async with build_hub(path):
                await target.wait_for(lambda: deliveries() == ["state-1"])
            body = json.dumps({"id": "while-down", "device": "d2", "value": 8}).encode()
            await device.publish(f"t{run}/sensors/d2/usage", body, qos=1, retain=True)  # kept by the session and retained
            for _ in range(2):  # two more starts
                async with build_hub(path) as hub:
                    await target.wait_for(lambda: "while-down" in deliveries())
                    await asyncio.sleep(1.0)  # the broker's re-sent retained messages would arrive now
                    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
            assert deliveries() == ["state-1", "while-down"], deliveries()
            assert len(records) == 2  # one event each on Kafka
            for device_id in ("d1", "d2"):
                await device.publish(f"t{run}/sensors/{device_id}/usage", b"", qos=1, retain=True)  # cleared
    finally:
        await target.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_topic_changed_in_the_config_changes_what_the_kept_session_brings(protocol: str, tmp_path: Path, bootstrap: str) -> None:
    """The broker keeps a persistent session's subscriptions. A topic taken out of the config was
    never unsubscribed: its messages went on arriving and became events. And on 3.1.1, the
    retained message of a topic added to the config was passed over as a re-send. Now the session
    is unsubscribed from what the config no longer names, and a new topic's retained message is taken."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    cfg = config(bootstrap, target, run, unique_prefix())
    cfg["inbound"][0]["protocol"] = protocol
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    new_topic = f"t{run}/meters/+/usage"  # in place of the sensors topic of config()

    def deliveries() -> list[str]:
        return sorted(c.headers["Idempotency-Key"] for c in target.accepted)

    def reading(ident: str, device: str) -> bytes:
        return json.dumps({"id": ident, "device": device, "value": 1}).encode()

    try:
        async with aiomqtt.Client("127.0.0.1", 1883, protocol=version) as device:
            async with build_hub(write_config(tmp_path / "old.yaml", cfg)):
                await device.publish(f"t{run}/sensors/d1/usage", reading("old-1", "d1"), qos=1)
                await target.wait_for(lambda: deliveries() == ["old-1"])
            await device.publish(f"t{run}/meters/m1/usage", reading("meter-state", "m1"), qos=1, retain=True)  # before the change
            cfg["inbound"][0]["topics"] = [new_topic]
            async with build_hub(write_config(tmp_path / "new.yaml", cfg)):
                await target.wait_for(lambda: "meter-state" in deliveries())  # the new topic's retained state, taken
                await device.publish(f"t{run}/sensors/d1/usage", reading("old-2", "d1"), qos=1)  # the topic taken out
                await device.publish(f"t{run}/meters/m1/usage", reading("meter-2", "m1"), qos=1)
                await target.wait_for(lambda: "meter-2" in deliveries())
                await asyncio.sleep(0.5)
            assert deliveries() == ["meter-2", "meter-state", "old-1"], deliveries()
            await device.publish(f"t{run}/meters/m1/usage", b"", qos=1, retain=True)  # cleared
    finally:
        await target.stop()


async def test_a_session_the_broker_did_not_keep_is_said(tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    """A broker restarted without persistence (or a session expired) has no session for the hub's
    client id: what was published while the hub was away is gone, and MQTT says nothing of it.
    The hub knows it subscribed under that id before, and now says so; a kept session says nothing."""
    from tests.support.mosquitto_private import private_mosquitto

    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    cfg = config(bootstrap, target, run, unique_prefix())
    cfg["outbound"], cfg["routes"][0]["to"] = cfg["outbound"][:1], ["erp"]

    async def publish(port: int, name: str) -> None:
        async with aiomqtt.Client("127.0.0.1", port) as sensor:
            await sensor.publish(f"t{run}/sensors/d1/usage", json.dumps({"id": name, "device": "d1", "value": 1}), qos=1)

    def lost_said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "did not keep the hub's session" in r.getMessage()]

    try:
        with private_mosquitto() as port:
            cfg["inbound"][0]["port"] = port
            path = write_config(tmp_path / "bus.yaml", cfg)
            async with build_hub(path):
                pass  # subscribed under its client id
            await publish(port, "while-away")
            async with build_hub(path) as hub:
                await target.wait_for(lambda: len(target.accepted) == 1)  # the kept session brought it
                assert lost_said() == [] and hub.inbound[0].attention() == ""
        with private_mosquitto(port=port):  # the broker restarted, without persistence: no session
            await publish(port, "lost")
            async with build_hub(path) as hub:
                [said] = lost_said()
                assert f"client id bus-test-{run}" in said and f"'t{run}/sensors/+/usage'" in said
                assert "did not keep the hub's session" in hub.inbound[0].attention()
                await publish(port, "after")
                await target.wait_for(lambda: len(target.accepted) == 2)
        assert [c.body["payment_id"] for c in target.accepted] == ["while-away", "after"]
    finally:
        await target.stop()


async def test_a_broker_that_takes_only_tls_with_a_client_certificate(tmp_path: Path, bootstrap: str) -> None:
    """Cloud and production brokers take only TLS (8883), and IoT platforms (AWS IoT Core, Azure
    IoT Hub) identify a gateway by its client certificate: the hub could not connect to one at all.
    A broker of the test's own asks every client for a certificate signed by its CA: with the
    hub's, sensor messages come in and alerts go out over TLS; without one, the hub cannot start
    the adapters and says why; files that cannot be used fail `bus validate`."""
    from tests.support.certs import Authority
    from tests.support.mosquitto_private import private_mosquitto

    authority = Authority(tmp_path / "pki")
    server, hub_cert = authority.issue("broker", server=True), authority.issue("hub")
    device = authority.issue("device")
    files = {"ca.pem": authority.cert, "broker.pem": server.cert, "broker.key": server.key}
    tls_listener = ("cafile {dir}/ca.pem", "certfile {dir}/broker.pem", "keyfile {dir}/broker.key", "require_certificate true")
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    try:
        with private_mosquitto(*tls_listener, files=files) as port:
            cfg = config(bootstrap, target, run, unique_prefix())
            tls = {"ca": str(authority.cert), "cert": str(hub_cert.cert), "key": str(hub_cert.key)}
            for adapter in (cfg["inbound"][0], cfg["outbound"][1]):
                adapter |= {"port": port, "tls": tls}
            path = write_config(tmp_path / "bus.yaml", cfg)
            context = ssl.create_default_context(cafile=str(authority.cert))
            context.load_cert_chain(str(device.cert), str(device.key))
            async with (
                aiomqtt.Client("127.0.0.1", port, tls_context=context) as listener,
                aiomqtt.Client("127.0.0.1", port, tls_context=context) as sensor,
                build_hub(path) as hub,
            ):
                await listener.subscribe(f"t{run}/alerts/#", qos=1)
                await sensor.publish(f"t{run}/sensors/d1/usage", json.dumps({"id": "r1", "device": "d1", "value": 7}), qos=1)
                await target.wait_for(lambda: len(target.accepted) == 1)
                alert = await asyncio.wait_for(anext(listener.messages), 30)
                assert json.loads(alert.payload) == {"id": "r1", "v": 7}  # type: ignore[arg-type]
                for adapter in (hub.inbound[0], hub.outbound[1]):
                    assert (await healthy(adapter)).ok, adapter.config.name

            for adapter in (cfg["inbound"][0], cfg["outbound"][1]):
                adapter["tls"] = {"ca": str(authority.cert)}  # TLS, but no client certificate
            async with build_hub(write_config(path, cfg)) as hub:
                for what in ("inbound sensors", "outbound alerts"):
                    said = hub.starting.get(what, "")
                    # The broker's alert (CERTIFICATE_REQUIRED) or only its closed socket reaches
                    # the hub, a race under TLS 1.3: either way the error says what to give.
                    assert f"cannot connect to 127.0.0.1:{port}" in said, hub.starting
                    assert "give tls.cert and tls.key" in said, hub.starting

        cfg["inbound"][0]["tls"] = {"ca": str(tmp_path / "missing.pem")}
        assert main(["validate", "-c", str(write_config(path, cfg))]) != 0
    finally:
        await target.stop()


async def test_two_replicas_keep_one_session_and_the_other_takes_it_over(tmp_path: Path, bootstrap: str) -> None:
    """Two inbound replicas with one mqtt inbound (one client id): one process holds the session
    and the other stands by. Both connected, the broker handed the session to whichever connected
    last, and took it back at its reconnection, in turn."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    body = config(bootstrap, target, run, unique_prefix())
    del body["routes"], body["outbound"]
    path = write_config(tmp_path / "bus.yaml", body)
    first, second = build_hub(path, role="inbound"), build_hub(path, role="inbound")
    try:
        async with aiomqtt.Client("127.0.0.1", 1883) as sensor:
            await asyncio.gather(first.start(), second.start())
            standing = [getattr(hub.inbound[0], "standing_by", None) for hub in (first, second)]
            assert sorted(standing, key=str) == [False, True], standing
            reader, standby = (first, second) if standing[1] else (second, first)
            for i in range(30):
                await sensor.publish(f"t{run}/sensors/d{i % 3}/usage", json.dumps({"id": f"r{i}", "device": "d", "value": i}), qos=1)
                await asyncio.sleep(0.02)
            topic = reader.topics.canonical("Payment")

            async def ids() -> list[str]:
                records = await read_topic(reader.config.kafka, reader.bootstrap, topic)
                return sorted(dict(r.headers)["ce_id"].decode() for r in records)

            for _ in range(150):
                if len(await ids()) >= 30:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # a second reader, if any, would have doubled some by now
            assert await ids() == sorted(f"r{i}" for i in range(30)), "each message once"
            assert reading(standby)._client is None, "the standby never connected"
            assert (await healthy(reader.inbound[0])).ok and all((await standby.readiness()).values())

            await reader.stop()  # the persistent session goes to the other, with what came meanwhile
            for i in range(30, 40):
                await sensor.publish(f"t{run}/sensors/d{i % 3}/usage", json.dumps({"id": f"r{i}", "device": "d", "value": i}), qos=1)
            for _ in range(150):
                if len(await ids()) >= 40:
                    break
                await asyncio.sleep(0.2)
            assert await ids() == sorted(f"r{i}" for i in range(40)), "each message once, none lost in the hand-over"
    finally:
        await asyncio.gather(first.stop(), second.stop())
        await target.stop()


def an_outbound(port: int) -> MqttOutbound:
    config = MqttOutboundConfig.model_validate({"type": "mqtt", "name": "alerts", "host": "127.0.0.1", "port": port, "topic": "t"})
    return MqttOutbound(config, Context(name="alerts", logger=logging.getLogger("t")))


async def test_a_connection_cancelled_while_it_is_made_leaves_nothing_running() -> None:
    """A hub that stops while an MQTT adapter is still connecting (a broker slow to send its
    CONNACK) cancels that start. aiomqtt kept the socket open and its housekeeping task running."""
    async with silent_server() as port:  # accepts and never sends CONNACK: the client waits
        outbound = an_outbound(port)
        left = await left_running_after_cancelling(outbound.start())
        assert left == [], [t.get_coro() for t in left]


async def test_a_broker_that_never_answers_costs_no_socket_per_try() -> None:
    """A broker that takes the connection and never answers: each try times out and is retried
    by the supervisor. aiomqtt kept each try's socket open and its task running: a hub left
    retrying for a day held thousands of sockets."""
    async with silent_server() as port:
        config = MqttOutboundConfig.model_validate({"type": "mqtt", "name": "alerts", "host": "127.0.0.1", "port": port, "topic": "t"})
        before = set(asyncio.all_tasks())
        clients = [aiomqtt.Client("127.0.0.1", port, timeout=0.3) for _ in range(3)]
        for client in clients:
            with pytest.raises(RetryableError, match="cannot connect"):
                await connect(client, config, ("127.0.0.1", port))
        await asyncio.sleep(0.1)
        assert [t for t in asyncio.all_tasks() - before if not t.done()] == []
        assert [client._client.socket() for client in clients] == [None, None, None]  # each try's socket closed


async def test_an_empty_message_clearing_a_retained_one_is_parked_saying_so_or_passed_over(tmp_path: Path, bootstrap: str) -> None:
    """A device cleared from a topic (its retained message deleted: an empty message, which the
    broker sends to the topic's subscribers) was parked as "invalid JSON", a dead letter for a
    routine act. It is parked saying what it is and how to pass over such messages; with
    ``empty: skip`` it is acknowledged, counted and passed over, and the messages after it flow."""
    run = uuid.uuid4().hex[:8]
    emit = {"schema": "Payment", "id": "id", "key": "device", "map": {"payment_id": "id", "amount": "value", "currency": '"usd"'}}
    inbound = [
        {"name": name, "type": "mqtt", "host": "127.0.0.1", "topics": [f"t{run}/{name}/+"], "client_id": f"bus-{name}-{run}", "emit": emit}
        for name in ("parks", "skips")
    ]
    inbound[1]["empty"] = "skip"
    cfg = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": inbound,
    }
    async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub, aiomqtt.Client("127.0.0.1", 1883) as device:
        parks, skips = hub.inbound
        await healthy(parks)
        await healthy(skips)
        for name in ("parks", "skips"):
            await device.publish(f"t{run}/{name}/d1", json.dumps({"id": f"{name}-1", "device": "d1", "value": 1}), qos=1, retain=True)
            await device.publish(f"t{run}/{name}/d1", b"", qos=1, retain=True)  # the device taken out: its state cleared
            await device.publish(f"t{run}/{name}/d2", json.dumps({"id": f"{name}-2", "device": "d2", "value": 2}), qos=1)
        for _ in range(150):
            events = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("parks"))
            if len(events) == 4 and parked and skips.progress().get("empty_skipped") == 1:
                break
            await asyncio.sleep(0.2)
        assert sorted(dict(r.headers)["ce_id"].decode() for r in events) == ["parks-1", "parks-2", "skips-1", "skips-2"]
        assert len(parked) == 1 and b"clears a topic's retained message" in dict(parked[0].headers)["bus_error"], parked
        assert b"empty: skip" in dict(parked[0].headers)["bus_error"]
        assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("skips")) == []
        assert skips.progress() == {"empty_skipped": 1} and parks.progress() == {}
