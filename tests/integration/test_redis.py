"""The redis adapters against the real Redis on this machine (and private ones for settings the
shared server cannot take) and the real embedded broker."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.redis import inbound as redis_inbound
from adapters.redis.config import RedisOutboundConfig
from adapters.redis.outbound import RedisOutbound
from bus.adapter_api import Context, PermanentError, RetryableError
from bus.app.cli import main
from bus.event import Event
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.certs import Authority
from tests.support.hub import build_hub, flow_config, write_config
from tests.support.redis_private import private_redis, redis_with_sentinel
from tests.support.target import Target
from tests.support.wait import until, until_true

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def shared_redis() -> None:
    require_service("Redis", "127.0.0.1", 6379)


@asynccontextmanager
async def redis_client(url: str = URL) -> AsyncIterator[aioredis.Redis]:
    """A client, and every key the test made (named t<run>...) deleted after."""
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def drop_keys(client: aioredis.Redis, run: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"t{run}*")]
    if keys:
        await client.delete(*keys)


def hub_config(bootstrap: str, target: Target, run: str, **inbound: Any) -> dict[str, Any]:
    """Orders read from the stream t<run>.orders, sent to an HTTP target, a hash per customer and a stream."""
    orders = {
        "name": "orders",
        "type": "redis",
        "url": URL,
        "stream": f"t{run}.orders",
        "emit": {
            "schema": "Payment",
            "id": "id",
            "key": "account",
            "map": {"payment_id": "id", "amount": "int(seq)", "currency": '"eur"', "customer_id": "account"},
        },
        **inbound,
    }
    latest = {
        "name": "latest",
        "type": "redis",
        "url": URL,
        "command": "hset",
        "key": f"t{run}.customer:$${{customer_id}}",
        "body": {"last_payment": "payment_id", "amount": "amount", "at": "$time"},
    }
    feed = {"name": "feed", "type": "redis", "url": URL, "command": "xadd", "key": f"t{run}.feed", "maxlen": 10_000}
    erp = {"name": "erp", "type": "http", "url": f"{target.url}/erp"}
    return flow_config(bootstrap, [orders], [erp, latest, feed], schema="Payment")


def stream_to_keys(bootstrap: str, url: str, **connection: Any) -> dict[str, Any]:
    """Entries of the stream `orders` become payments, each kept under payment:<id>; ``connection``
    (tls, sentinel) for both ends."""
    emit = {"schema": "Payment", "id": "id", "map": {"payment_id": "id", "amount": "int(seq)", "currency": '"eur"'}}
    inbound = {"name": "orders", "type": "redis", "url": url, "stream": "orders", "emit": emit, **connection}
    cache = {"name": "cache", "type": "redis", "url": url, "command": "set", "key": "payment:$${payment_id}", **connection}
    return flow_config(bootstrap, [inbound], [cache], schema="Payment")


async def written(client: aioredis.Redis, count: int) -> bool:
    """Whether payment:n0 .. payment:n<count - 1> are all there."""
    return bool(await client.exists(*[f"payment:n{i}" for i in range(count)]) == count)


def order(i: int) -> dict[str, str]:
    return {"id": f"n{i}", "account": f"a{i % 3}", "seq": str(i)}


def delivered(target: Target) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in target.accepted:
        counts[call.body["payment_id"]] = counts.get(call.body["payment_id"], 0) + 1
    return counts


async def test_a_stream_read_by_a_group_resumes_where_it_stopped_and_parks_what_it_cannot_read(tmp_path: Path, bootstrap: str) -> None:
    """Entries become events; one that is not JSON and one without the configured field are parked
    with their reasons and acknowledged (the group holds nothing pending), so they never stop the
    stream; entries added while the hub is down are read at the next start, none twice. Each event
    reaches an HTTP target, a hash per customer (the latest payment) and a stream, once."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    stream = f"t{run}.orders"
    path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, target, run, field="data"))
    async with redis_client() as client:
        try:

            async def add(first: int, last: int) -> None:
                for i in range(first, last):
                    await client.xadd(stream, {"data": json.dumps(order(i))})

            async with build_hub(path) as hub:
                await add(0, 20)
                await client.xadd(stream, {"data": "{broken"})
                await client.xadd(stream, {"data": ""})  # present but empty: not JSON, not the entry's other fields
                await client.xadd(stream, {"payload": json.dumps(order(99))})  # not the configured field
                await add(20, 30)
                await target.wait_for(lambda: len(target.accepted) == 30)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
                reasons = {r.value: dict(r.headers)["bus_error"].decode() for r in parked}
                assert set(reasons) == {b"{broken", b"", json.dumps({"payload": json.dumps(order(99))}, separators=(",", ":")).encode()}
                assert "invalid JSON" in reasons[b"{broken"] and "invalid JSON" in reasons[b""]
                assert any("the entry has no field 'data' (it has payload)" in reason for reason in reasons.values()), reasons
                assert all(dict(r.headers)["bus_origin"] == f"redis:{stream}".encode() for r in parked)
                assert hub.inbound[0].progress()["consumer"] == f"{socket.gethostname()}-{os.getpid()}"  # in /readyz's detail

            await add(30, 40)  # while the hub is down: the group keeps its place
            async with build_hub(path):
                await target.wait_for(lambda: len(delivered(target)) == 40)

                async def fed() -> bool:  # the stream is another subscriber's: it may join later than the HTTP target's
                    return len(await client.xrange(f"t{run}.feed")) >= 40

                await until_true(fed, "the feed holds all forty", timeout=60)
                await asyncio.sleep(0.5)  # anything read twice would arrive now
                feed = await client.xrange(f"t{run}.feed")
                pending = await client.xpending(stream, "bus-orders")

            assert delivered(target) == {f"n{i}": 1 for i in range(40)}
            assert pending["pending"] == 0
            assert sorted(json.loads(fields[b"data"])["payment_id"] for _, fields in feed) == sorted(f"n{i}" for i in range(40))
            assert {fields[b"ce_id"] for _, fields in feed} == {f"n{i}".encode() for i in range(40)}
            latest = await client.hgetall(f"t{run}.customer:a0")
            assert latest[b"last_payment"] == b"n39" and latest[b"amount"] == b"39" and latest[b"at"].endswith(b"Z")
        finally:
            await drop_keys(client, run)
            await target.stop()


async def test_entries_left_pending_by_a_consumer_that_died_are_taken_over(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod that read entries and died leaves them pending under its name for good: Redis never
    hands them out again. The hub takes them over after claim_after, says so, and delivers them;
    that consumer, left with nothing pending, leaves the group. Entries given to this very
    process's consumer before a restart (its pod restarted the container) are read first, at
    once; one deleted from the stream meanwhile is acknowledged and said."""
    monkeypatch.setattr(redis_inbound, "_LEFT_BEHIND_MS", 200)  # an hour in production
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    stream = f"t{run}.orders"
    ours = f"{socket.gethostname()}-{os.getpid()}"  # the name this process reads under
    async with redis_client() as client:
        try:
            await client.xgroup_create(stream, "bus-orders", id="0", mkstream=True)
            ids = [await client.xadd(stream, order(i)) for i in range(9)]
            await client.xreadgroup("bus-orders", "dead-pod-7f9c", {stream: ">"}, count=5)  # n0..n4, never acknowledged
            await client.xreadgroup("bus-orders", ours, {stream: ">"}, count=3)  # n5..n7, this process before a restart
            await client.xdel(stream, ids[7])  # n7 deleted before it was acknowledged
            config = hub_config(bootstrap, target, run, claim_after="1s")
            with caplog.at_level(logging.INFO):
                async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                    [orders] = hub.inbound
                    await target.wait_for(lambda: len(delivered(target)) == 8)
                    await until(lambda: orders.progress().get("claimed") == 5, "the dead pod's entries claimed", timeout=30)

                    async def only_ours_left() -> bool:
                        return [c["name"] for c in await client.xinfo_consumers(stream, "bus-orders")] == [ours.encode()]

                    await until_true(only_ours_left, "the dead pod's consumer removed", timeout=10)
                    consumers = await client.xinfo_consumers(stream, "bus-orders")
                    pending = await client.xpending(stream, "bus-orders")
            assert delivered(target) == {f"n{i}": 1 for i in range(9) if i != 7}
            assert orders.progress()["deleted_before_read"] == 1
            assert pending["pending"] == 0
            assert [c["name"] for c in consumers] == [ours.encode()]
            assert "took over 5 entries" in caplog.text and "left unacknowledged for over 1s" in caplog.text
            assert "1 entry of" in caplog.text and "deleted from the stream" in caplog.text
            assert "consumer dead-pod-7f9c of group bus-orders left nothing pending; removed" in caplog.text
        finally:
            await drop_keys(client, run)
            await target.stop()


async def test_a_group_deleted_or_an_adapter_renamed_goes_on_after_the_last_entry_acknowledged(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer group deleted while the hub reads through it (an operator's XGROUP DESTROY, a
    Redis that lost its data), or an adapter renamed (its group is bus-<name>), is made again from
    after the last entry the hub acknowledged (kept with its positions in Kafka), said at WARNING:
    made at `oldest`, every entry the stream held came again; at `newest`, those added while it was
    missing never came."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    stream = f"t{run}.orders"
    config = hub_config(bootstrap, target, run, field="data")
    path = write_config(tmp_path / "bus.yaml", config)

    async def add(first: int, last: int) -> None:
        for i in range(first, last):
            await client.xadd(stream, {"data": json.dumps(order(i))})

    async with redis_client() as client:
        try:
            async with build_hub(path):
                await add(0, 10)
                await target.wait_for(lambda: len(delivered(target)) == 10)
                await asyncio.sleep(1.2)  # the position is saved at most every second
                await client.xgroup_destroy(stream, "bus-orders")
                await add(10, 15)
                await target.wait_for(lambda: len(delivered(target)) == 15, timeout=30)
            assert "consumer group bus-orders of stream" in caplog.text and "was missing" in caplog.text
            assert "reading from after entry" in caplog.text
            assert "inbound:orders restarted (1 restart(s)" in caplog.text
            assert "restart failed" not in caplog.text  # the consume task's death is not raised again by the restart's stop

            caplog.clear()
            config["inbound"][0]["name"] = "shop-orders"  # renamed while the hub is down: its group is bus-shop-orders
            await add(15, 20)
            async with build_hub(write_config(path, config)):
                await target.wait_for(lambda: len(delivered(target)) == 20, timeout=30)
                await asyncio.sleep(0.5)  # anything read twice would arrive now
            assert delivered(target) == {f"n{i}": 1 for i in range(20)}
            assert "consumer group bus-shop-orders of stream" in caplog.text and "was missing" in caplog.text
        finally:
            await drop_keys(client, run)
            await target.stop()


async def test_the_whole_entry_is_the_document_when_no_field_is_named(tmp_path: Path, bootstrap: str) -> None:
    """Producers that write flat entries (XADD orders * id 42 status paid) are read as objects of
    strings; an entry with bytes that are not UTF-8 is parked saying which field; a group made at
    `newest` passes over what the stream held before."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    stream = f"t{run}.orders"
    async with redis_client() as client:
        try:
            await client.xadd(stream, order(100))  # before the group: passed over
            config = hub_config(bootstrap, target, run, start_at="newest")
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:

                async def group_made() -> bool:  # as the adapter starts
                    return bool(await client.exists(stream)) and bool(await client.xinfo_groups(stream))

                await until_true(group_made, "the consumer group made", timeout=10)
                await client.xadd(stream, order(1))
                await client.xadd(stream, {"id": "n2", "note": b"\xff\xfe"})
                await client.xadd(stream, order(3))
                await target.wait_for(lambda: len(target.accepted) == 2)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
            assert sorted(delivered(target)) == ["n1", "n3"]
            [letter] = parked
            assert "the entry's field 'note': its value is not UTF-8 text" in dict(letter.headers)["bus_error"].decode()
            assert json.loads(letter.value) == {"id": "n2", "note": "\\xff\\xfe"}
        finally:
            await drop_keys(client, run)
            await target.stop()


def outbound(url: str = URL, **settings: Any) -> RedisOutbound:
    config = RedisOutboundConfig.model_validate({"name": "cache", "type": "redis", "url": url, **settings})
    return RedisOutbound(config, Context(name="cache", logger=logging.getLogger("test.redis")))


def customer(event_id: str, **data: Any) -> Event:
    return Event(schema="Customer", data=data, source="/crm", id=event_id, type="Customer")


async def test_an_event_delivered_twice_is_appended_once_within_the_dedupe_window() -> None:
    """A delivery whose answer was lost is tried again by the runtime: the same event id is not
    appended twice while its mark lasts; with the window at 0s each delivery appends (the mark
    is what prevents it). An entry the stream refuses (a key of another type) leaves no mark, so
    its retry after the key is fixed is appended."""
    run = uuid.uuid4().hex[:8]
    stream = f"t{run}.feed"
    once, every = outbound(command="xadd", key=stream), outbound(command="xadd", key=f"{stream}.raw", dedupe_window="0s")
    async with redis_client() as client:
        try:
            for adapter in (once, every):
                await adapter.start()
                for _ in range(3):
                    await adapter.deliver(customer("evt-1", id="c1", name="Ann"))
            assert await client.xlen(stream) == 1
            assert await client.xlen(f"{stream}.raw") == 3
            assert 0 < await client.pttl(f"{stream}:bus-ids:evt-1") <= 120_000

            await client.set(f"{stream}.text", "not a stream")
            wrong = outbound(command="xadd", key=f"{stream}.text")
            await wrong.start()
            with pytest.raises(PermanentError, match="holds another type of value than a stream: WRONGTYPE"):
                await wrong.deliver(customer("evt-2", id="c2"))
            await client.delete(f"{stream}.text")
            await wrong.deliver(customer("evt-2", id="c2"))
            assert await client.xlen(f"{stream}.text") == 1
            await wrong.stop()
        finally:
            for adapter in (once, every):
                await adapter.stop()
            await drop_keys(client, run)


async def test_keys_hold_the_latest_record_as_json_or_a_hash() -> None:
    """set keeps the body as JSON, with a TTL; hset holds exactly the body's fields (a field the
    source dropped goes), a record as its JSON text and null as no field, or adds to the hash
    with replace off; delete_when deletes the key; an empty part of the key is refused."""
    run = uuid.uuid4().hex[:8]
    as_json = outbound(command="set", key=f"t{run}.json:${{id}}", ttl="1h")
    as_hash = outbound(command="hset", key=f"t{run}.hash:${{id}}", delete_when='status == "deleted"')
    adding = outbound(command="hset", key=f"t{run}.add:${{id}}", replace=False)
    async with redis_client() as client:
        try:
            for adapter in (as_json, as_hash, adding):
                await adapter.start()
                await adapter.deliver(customer("e1", id="c1", name="Ann", tier="gold", address={"city": "Oslo"}, phone=None))
                await adapter.deliver(customer("e2", id="c1", name="Ann B", status="active"))
            assert json.loads(await client.get(f"t{run}.json:c1")) == {"id": "c1", "name": "Ann B", "status": "active"}
            assert 3500 < await client.ttl(f"t{run}.json:c1") <= 3600
            assert await client.hgetall(f"t{run}.hash:c1") == {b"id": b"c1", b"name": b"Ann B", b"status": b"active"}
            assert await client.hgetall(f"t{run}.add:c1") == {
                b"id": b"c1", b"name": b"Ann B", b"tier": b"gold", b"address": b'{"city":"Oslo"}', b"status": b"active"
            }  # fmt: skip
            assert await client.ttl(f"t{run}.hash:c1") == -1  # no ttl: kept

            await as_hash.deliver(customer("e3", id="c1", status="deleted"))
            assert await client.exists(f"t{run}.hash:c1") == 0
            with pytest.raises(PermanentError, match="a value in its template is empty"):
                await as_json.deliver(customer("e4", id="", name="nobody"))
        finally:
            for adapter in (as_json, as_hash, adding):
                await adapter.stop()
            await drop_keys(client, run)


async def test_a_redis_out_of_memory_or_refusing_the_user_is_retried_not_dead_lettered() -> None:
    """A Redis at its maxmemory (noeviction) refuses every write until memory is freed, and a user
    without the permission is refused until an operator grants it: the same for every event, so
    each is retried (the subscriber waits) instead of dead-lettering all of them. A wrong password
    fails the start, saying the credentials were refused."""
    with private_redis("--maxmemory-policy", "noeviction") as port:
        url = f"redis://127.0.0.1:{port}/0"
        async with redis_client(url) as client:
            await client.execute_command("ACL", "SETUSER", "reader", "on", ">secret", "~*", "+@read", "+ping", "+client")
            await client.set("ballast", "x" * 2_000_000)
            await client.config_set("maxmemory", "1mb")  # under what it holds: writes are refused from now on
            for settings in ({"command": "xadd", "key": "feed"}, {"command": "hset", "key": "c:${id}"}, {"command": "set", "key": "s"}):
                adapter = outbound(url, **settings)
                await adapter.start()
                with pytest.raises(RetryableError, match=r"refused the write .* for now: command not allowed when used memory"):
                    await adapter.deliver(customer("e1", id="c1"))
                await adapter.stop()
            await client.delete("ballast")

            reader = outbound(f"redis://reader:secret@127.0.0.1:{port}/0", command="set", key="s")
            await reader.start()
            with pytest.raises(RetryableError, match=r"for now: .*no permissions to run the 'set' command"):
                await reader.deliver(customer("e1", id="c1"))
            await reader.stop()

            wrong = outbound(f"redis://reader:nope@127.0.0.1:{port}/0", command="set", key="s")
            with pytest.raises(RetryableError, match=f"Redis at 127.0.0.1:{port}/0 refused the credentials"):
                await wrong.start()


async def test_both_directions_over_mutual_tls(tmp_path: Path, bootstrap: str) -> None:
    """A Redis that takes only TLS connections with a client certificate (managed Redis services,
    `tls-auth-clients yes`): the hub reads a stream and writes keys over rediss:// with its own
    certificate (its key protected by a password); without a certificate the server refuses it,
    and the start says it cannot reach Redis."""
    server_ca, client_ca = Authority(tmp_path / "server-ca", "Cache CA"), Authority(tmp_path / "client-ca", "Client CA")
    served = server_ca.issue("redis", server=True)
    hub_cert = client_ca.issue("hub", password=b"k3y")
    with private_redis(tls=(served.cert, served.key, client_ca.cert)) as port:
        url = f"rediss://127.0.0.1:{port}/0"
        tls = {"ca": str(server_ca.cert), "cert": str(hub_cert.cert), "key": str(hub_cert.key), "key_password": "k3y"}
        config = stream_to_keys(bootstrap, url, tls=tls)
        client = aioredis.Redis.from_url(
            url, ssl_ca_certs=str(server_ca.cert), ssl_certfile=str(hub_cert.cert), ssl_keyfile=str(hub_cert.key), ssl_password="k3y"
        )
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)):
                await client.xadd("orders", order(1))

                async def stored() -> bool:
                    return bool(await client.exists("payment:n1"))

                await until_true(stored, "the payment written", timeout=30)
            assert json.loads(await client.get("payment:n1"))["amount"] == 1
        finally:
            await client.aclose()
        bare = outbound(url, command="set", key="k", tls={"ca": str(server_ca.cert)})
        with pytest.raises(RetryableError, match=f"cannot reach Redis at 127.0.0.1:{port}/0"):
            await bare.start()


async def test_a_sentinel_failover_loses_nothing_read_or_written(tmp_path: Path, bootstrap: str) -> None:
    """Redis behind Sentinel (a primary, a replica, a sentinel): the hub finds the primary through
    the sentinel, reads a stream and writes keys there; the primary is killed mid-flow, the
    sentinel promotes the replica, and the hub goes on with it (its reads and writes fail on the
    lost connection, are retried, and find the new primary): every entry read, every key written,
    nothing left pending."""
    with redis_with_sentinel("orders-primary") as setup:
        sentinel = {"master": "orders-primary", "nodes": [f"127.0.0.1:{setup.sentinel}"]}
        url = "redis://ignored-host:1/0"  # with a sentinel only the url's credentials and database count
        config = stream_to_keys(bootstrap, url, sentinel=sentinel)
        watcher = aioredis.Redis(port=setup.sentinel)

        async def primary() -> int:
            _, port = await watcher.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "orders-primary")
            return int(port)

        first = aioredis.Redis(port=setup.primary)
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)):
                for i in range(10):
                    await first.xadd("orders", order(i))
                await until_true(lambda: written(first, 10), "the first ten written", timeout=30)
                await first.execute_command("WAIT", 1, 5000)  # the replica has all of it, the group's acknowledgements too
                setup.kill_primary()

                async def promoted_now() -> bool:  # down after 1 s, then the election
                    return await primary() == setup.replica

                await until_true(promoted_now, "the replica promoted", timeout=30)
                promoted = aioredis.Redis(port=setup.replica)
                for i in range(10, 20):
                    await promoted.xadd("orders", order(i))
                await until_true(lambda: written(promoted, 20), "all twenty written", timeout=60)

                async def none_pending() -> bool:  # each entry is acknowledged just after its write
                    return (await promoted.xpending("orders", "bus-orders"))["pending"] == 0

                await until_true(none_pending, "every entry acknowledged", timeout=30)
                pending = await promoted.xpending("orders", "bus-orders")
            assert await written(promoted, 20)
            assert pending["pending"] == 0
            await promoted.aclose()
        finally:
            await first.aclose()
            await watcher.aclose()


def test_bus_validate_names_the_field_of_a_redis_config_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The URL's scheme and database, TLS on a plain URL, settings the command would ignore, and a
    cluster behind sentinels or with a database other than 0 are refused at load, naming the
    adapter's field."""
    base = {"kafka": {"bootstrap": "127.0.0.1:9092", "topic_prefix": "t"}, "inbound": [], "routes": []}
    cases = {
        "http://127.0.0.1:6379": "a redis:// or rediss:// URL",
        "redis://127.0.0.1:6379/orders": "the URL's path is the database number",
        "redis://127.0.0.1:6379/" + "1" * 5000: "the URL's path is the database number",
    }
    for url, said in cases.items():
        config = {**base, "outbound": [{"name": "cache", "type": "redis", "url": url, "command": "set", "key": "k"}]}
        path = write_config(tmp_path / "bus.yaml", config)
        assert main(["validate", "-c", str(path)]) == 2
        out = capsys.readouterr()
        assert "outbound[0].url" in out.out + out.err and said in out.out + out.err, out
    for settings, said in (
        ({"command": "set", "maxlen": 5}, "maxlen (only with xadd) would do nothing"),
        ({"command": "xadd", "ttl": "1h"}, "ttl (only with set or hset) would do nothing"),
        ({"command": "set", "replace": False}, "replace (only with hset) would do nothing"),
        ({"command": "set", "tls": {}}, "tls is for a rediss:// url"),
        ({"command": "set", "sentinel": {"master": "m", "nodes": ["sentinel-0:port"]}}, "'sentinel-0:port' is not host:port"),
        # int() raised past 4,300 digits
        ({"command": "set", "sentinel": {"master": "m", "nodes": ["s:" + "9" * 5000]}}, "is not host:port"),
        ({"command": "set", "cluster": True, "sentinel": {"master": "m", "nodes": ["s:26379"]}}, "cluster and sentinel do not go"),
        ({"command": "set", "cluster": True, "url": "redis://127.0.0.1:6379/2"}, "a Redis Cluster has only database 0"),
        (
            {"command": "set", "cluster": True, "url": "rediss://h:6379/0", "tls": {"key": "k.pem", "cert": "c.pem", "key_password": "p"}},
            "cannot read a key protected by a password",
        ),
    ):
        config = {**base, "outbound": [{"name": "cache", "type": "redis", "url": URL, "key": "k", **settings}]}
        path = write_config(tmp_path / "bus.yaml", config)
        assert main(["validate", "-c", str(path)]) == 2
        out = capsys.readouterr()
        assert "outbound[0]" in out.out + out.err and said in out.out + out.err, out


async def test_a_migration_into_redis_keys_is_read_back_names_drift_and_rolls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bus migrate run` into a hash per customer and a JSON string per payment: every key read
    back checks out; a hash field changed behind the hub's back is named by `verify` with the
    differing field; `rollback` deletes the keys the run made and puts back the ones it replaced
    (a hash and a string that is not JSON, as they were)."""
    import yaml

    run = uuid.uuid4().hex[:8]
    rows = [{"ref": f"P-{i:03d}", "cents": i * 100, "customer": f"c{i % 5}", "paid": i % 2 == 0} for i in range(60)]
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{run}"},
        "routes": [{"name": "all", "from": "Payment", "to": ["payments", "customers"]}],
        "outbound": [
            {"name": "payments", "type": "redis", "url": URL, "command": "set", "key": f"t{run}.payment:$${{payment_id}}"},
            {
                "name": "customers",
                "type": "redis",
                "url": URL,
                "command": "hset",
                "key": f"t{run}.customer:$${{customer_id}}",
                "body": {"last": "payment_id", "amount": "amount", "settled": 'status == "succeeded"'},
            },
        ],
        "migrations": [
            {
                "name": "payments",
                "source": {"file": {"path": "export.jsonl"}},
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "map": {
                        "payment_id": "ref",
                        "amount": "cents",
                        "currency": '"eur"',
                        "customer_id": "customer",
                        "status": 'switch(paid, true, "succeeded", "pending")',
                    },
                },
                "batch_size": 25,
            }
        ],
    }
    config = str(tmp_path / "bus.yaml")
    (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "-c", config, "--json"])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async with redis_client() as client:
        try:
            await client.hset(f"t{run}.customer:c1", mapping={"last": "OLD-1", "note": "kept by the CRM"})
            await client.set(f"t{run}.payment:P-007", "legacy text, not JSON")
            before = {
                key: (await client.type(key), await client.dump(key)) for key in [k async for k in client.scan_iter(match=f"t{run}*")]
            }

            code, out, err = await asyncio.to_thread(cli, "migrate", "run", "payments")
            assert code == 0, err
            report = json.loads(out)
            by_name = {s["subscriber"]: s for s in report["subscribers"]}
            assert by_name["payments"]["checksums_equal"] and by_name["payments"]["records"] == 60
            assert by_name["customers"]["checksums_equal"] and by_name["customers"]["verifiable"] is True
            assert json.loads(await client.get(f"t{run}.payment:P-007"))["amount"] == 700
            assert await client.hgetall(f"t{run}.customer:c4") == {b"last": b"P-059", b"amount": b"5900", b"settled": b"false"}

            await client.hset(f"t{run}.customer:c3", "amount", "1")  # behind the hub's back
            code, out, _ = await asyncio.to_thread(cli, "migrate", "verify", report["run"])
            assert code == 1
            [customers] = [s for s in json.loads(out)["subscribers"] if s["subscriber"] == "customers"]
            assert customers["differences"] == [
                {"key": f"t{run}.customer:c3", "fields": {"amount": {"expected": "5800", "actual": "1"}}}
            ], customers["differences"]

            code, out, err = await asyncio.to_thread(cli, "migrate", "rollback", report["run"])
            assert code == 0, out + err
            after = {key: (await client.type(key), await client.dump(key)) for key in [k async for k in client.scan_iter(match=f"t{run}*")]}
            assert after == before
        finally:
            await drop_keys(client, run)
