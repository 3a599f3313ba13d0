"""The redis adapters against a Redis Cluster of the test's own (three primaries on this machine,
made by redis-cli) and the real embedded broker: keys spread over the nodes, slots moved and a
primary killed while the hub reads and writes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from adapters.redis.config import RedisInboundConfig, RedisOutboundConfig
from adapters.redis.inbound import RedisInbound
from adapters.redis.outbound import RedisOutbound
from bus.adapter_api import Context, PermanentError, RetryableError
from bus.event import Event
from tests.conftest import require_service
from tests.support.hub import build_hub, flow_config, write_config
from tests.support.redis_private import ClusterSetup, redis_cluster
from tests.support.sink import bare_context
from tests.support.wait import until_true

EMIT = {"schema": "Payment", "id": "id", "key": "account", "map": {"payment_id": "id", "amount": "int(seq)", "currency": '"eur"'}}


def cluster_flow(bootstrap: str, url: str) -> dict[str, Any]:
    """The stream `orders` read by a group; each payment kept under payment:<id> (keys over every
    node), appended to the stream `feed` (de-duplicated by event id) and to a hash per account."""
    inbound = {"name": "orders", "type": "redis", "url": url, "cluster": True, "stream": "orders", "emit": EMIT}
    cache = {"name": "cache", "type": "redis", "url": url, "cluster": True, "command": "set", "key": "payment:$${payment_id}"}
    feed = {"name": "feed", "type": "redis", "url": url, "cluster": True, "command": "xadd", "key": "feed"}
    latest = {
        "name": "latest",
        "type": "redis",
        "url": url,
        "cluster": True,
        "command": "hset",
        "key": "account:$${payment_id}",
        "body": {"amount": "amount"},
    }
    return flow_config(bootstrap, [inbound], [cache, feed, latest], schema="Payment")


def order(i: int) -> dict[str, str]:
    return {"id": f"n{i}", "account": f"a{i % 3}", "seq": str(i)}


async def written(client: RedisCluster, count: int) -> bool:
    """Every payment's key, its account hash and its feed entry there, and nothing pending in the
    group (the keys lie in many slots: asked one by one)."""
    keys = await asyncio.gather(*(client.exists(f"payment:n{i}", f"account:n{i}") for i in range(count)))
    feed = await client.xlen("feed") if await client.exists("feed") else 0
    return sum(keys) == 2 * count and feed >= count and (await client.xpending("orders", "bus-orders"))["pending"] == 0


async def settled(client: RedisCluster, count: int) -> None:
    """All of it written, the feed holding each event once, each hash the latest amount."""
    await until_true(lambda: written(client, count), f"all {count} payments written", timeout=60)
    feed = [fields[b"ce_id"] for _, fields in await client.xrange("feed")]
    assert len(feed) == len(set(feed)) == count
    assert await client.hget(f"account:n{count - 1}", "amount") == str(count - 1).encode()


def others(cluster: ClusterSetup, key: str) -> list[int]:
    return [port for port in cluster.primaries if port != cluster.owner(key)]


async def test_a_stream_and_keys_in_a_redis_cluster_are_followed_as_their_slots_move(tmp_path: Path, bootstrap: str) -> None:
    """With `cluster: true` the hub reads a stream and writes keys spread over all three
    primaries; then the stream's slot, the feed's and a key's are moved to other nodes while it
    runs (MIGRATE, then ASK and MOVED redirects), and it goes on with them: every entry read once,
    every key written, every feed entry appended once, nothing left pending."""
    with redis_cluster() as cluster:
        client = RedisCluster.from_url(cluster.url())
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", cluster_flow(bootstrap, cluster.url()))):
                for i in range(10):
                    await client.xadd("orders", order(i))
                await settled(client, 10)
                assert {cluster.owner(f"payment:n{i}") for i in range(10)} == set(cluster.primaries)

                for key in ("orders", "feed", "payment:n12"):
                    await asyncio.to_thread(cluster.move_slot_of, key, others(cluster, key)[0])
                for i in range(10, 20):
                    await client.xadd("orders", order(i))
                await settled(client, 20)
        finally:
            await client.aclose()


async def test_a_cluster_primary_killed_mid_flow_is_replaced_by_its_replica_and_nothing_is_lost(tmp_path: Path, bootstrap: str) -> None:
    """Three primaries with a replica each. The primary serving the stream, the very node the
    config names, is killed (SIGKILL) while the hub reads it; the cluster promotes its replica,
    and the hub's reads and writes, failed on the lost connection and retried, find the new
    primary (a restarted adapter starts from the nodes the cluster had, not only from the dead
    one): every entry read, every key written once, nothing left pending."""
    with redis_cluster(replicas=True) as cluster:
        doomed = cluster.owner("orders")
        url = f"redis://127.0.0.1:{doomed}/0"
        client = RedisCluster.from_url(url)
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", cluster_flow(bootstrap, url))):
                for i in range(10):
                    await client.xadd("orders", order(i))
                await settled(client, 10)
                async with aioredis.Redis(port=doomed) as primary:
                    await primary.execute_command("WAIT", 1, 5000)  # its replica has the stream, the group's acknowledgements too
                await asyncio.to_thread(cluster.kill, doomed)

                async def promoted() -> bool:
                    return await asyncio.to_thread(cluster.owner, "orders") == cluster.replicas[doomed]

                await until_true(promoted, "the replica promoted", timeout=30)
                await client.aclose()
                client = RedisCluster.from_url(f"redis://127.0.0.1:{cluster.replicas[doomed]}/0")
                for i in range(10, 20):
                    await client.xadd("orders", order(i))
                await settled(client, 20)
        finally:
            await client.aclose()


def outbound(url: str, **settings: Any) -> RedisOutbound:
    config = RedisOutboundConfig.model_validate({"name": "out", "type": "redis", "url": url, "cluster": True, **settings})
    return RedisOutbound(config, Context(name="out", logger=logging.getLogger("test.redis_cluster")))


def customer(event_id: str, **data: Any) -> Event:
    return Event(schema="Customer", data=data, source="/crm", id=event_id, type="Customer")


async def test_a_stream_in_a_cluster_is_appended_to_once_per_event_whatever_its_name() -> None:
    """The dedupe marker of an appended event shares its stream's slot (the append and the mark
    are one script, which a cluster runs only within one slot): a delivery repeated three times
    is appended once, for a plain name, a name with a hash tag of its own, and one with a brace
    in it. A name whose marker cannot share its slot is dead-lettered saying why and what to do;
    with `dedupe_window: 0s` it is appended. A hash is replaced in its one-key transaction."""
    with redis_cluster() as cluster:
        client = RedisCluster.from_url(cluster.url())
        adapters: list[RedisOutbound] = []
        try:
            for stream in ("billing.feed", "{eu}.feed", "or{ders"):
                adapter = outbound(cluster.url(), command="xadd", key=stream)
                adapters.append(adapter)
                await adapter.start()
                for _ in range(3):
                    await adapter.deliver(customer(f"evt-{stream}", id="c1"))
                assert await client.xlen(stream) == 1, stream

            odd = outbound(cluster.url(), command="xadd", key="a}b")
            adapters.append(odd)
            await odd.start()
            with pytest.raises(PermanentError, match=r"cannot share its slot .* or set dedupe_window: 0s"):
                await odd.deliver(customer("evt-odd", id="c1"))
            plain = outbound(cluster.url(), command="xadd", key="a}b", dedupe_window="0s")
            adapters.append(plain)
            await plain.start()
            await plain.deliver(customer("evt-odd", id="c1"))
            assert await client.xlen("a}b") == 1

            hashes = outbound(cluster.url(), command="hset", key="customer:${id}")
            adapters.append(hashes)
            await hashes.start()
            await hashes.deliver(customer("e1", id="c9", name="Ann", email="ann@example.com"))
            await hashes.deliver(customer("e2", id="c9", name="Ann B"))
            assert await client.hgetall("customer:c9") == {b"id": b"c9", b"name": b"Ann B"}
        finally:
            for adapter in adapters:
                await adapter.stop()
            await client.aclose()


async def test_a_server_whose_mode_is_not_the_configs_refuses_the_start_saying_which_to_set() -> None:
    """A single-node client of a cluster node would have each key another node serves refused
    (MOVED) and dead-letter it: the start fails, saying to set `cluster: true`. `cluster: true`
    against a server that is no cluster node fails saying to take it out. Both in and out."""
    require_service("Redis", "127.0.0.1", 6379)

    ctx = bare_context(logger="test.redis_cluster")  # the start is what is looked at; no entry is read
    with redis_cluster() as cluster:
        single = RedisOutbound(
            RedisOutboundConfig.model_validate({"name": "x", "type": "redis", "url": cluster.url(), "command": "set", "key": "k"}), ctx
        )
        with pytest.raises(RetryableError, match=r"is a node of a Redis Cluster: set `cluster: true`"):
            await single.start()
        reader = RedisInbound(
            RedisInboundConfig.model_validate({"name": "x", "type": "redis", "url": cluster.url(), "stream": "s", "emit": EMIT}), ctx
        )
        with pytest.raises(RetryableError, match=r"is a node of a Redis Cluster: set `cluster: true`"):
            await reader.open()
    wrong = outbound("redis://127.0.0.1:6379/0", command="set", key="k")
    with pytest.raises(RetryableError, match=r"127.0.0.1:6379 is not a node of a Redis Cluster .* take out `cluster: true`"):
        await wrong.start()


async def test_a_migration_into_cluster_keys_is_read_back_and_rolled_back_slot_by_slot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bus migrate run` into a hash per customer over the cluster's nodes: every key read back
    checks out (a pipeline over many slots); `rollback` puts the keys back, a transaction per slot
    (one over the batch's keys would be refused, CROSSSLOT): the cluster holds what it held."""
    import json

    import yaml

    from bus.app.cli import main

    rows = [{"ref": f"P-{i:03d}", "cents": i * 100, "customer": f"c{i % 20}"} for i in range(60)]
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with redis_cluster() as cluster:
        document = {
            "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": "m"},
            "routes": [{"name": "all", "from": "Payment", "to": ["customers"]}],
            "outbound": [
                {
                    "name": "customers",
                    "type": "redis",
                    "url": cluster.url(),
                    "cluster": True,
                    "command": "hset",
                    "key": "customer:$${customer_id}",
                    "body": {"last": "payment_id", "amount": "amount"},
                }
            ],
            "migrations": [
                {
                    "name": "payments",
                    "source": {"file": {"path": "export.jsonl"}},
                    "emit": {
                        "schema": "Payment",
                        "key": "ref",
                        "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"', "customer_id": "customer"},
                    },
                    "batch_size": 25,
                }
            ],
        }
        (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))

        def cli(*args: str) -> tuple[int, str, str]:
            capsys.readouterr()
            code = main([*args, "-c", str(tmp_path / "bus.yaml"), "--json"])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        client = RedisCluster.from_url(cluster.url())
        try:
            await client.hset("customer:c1", mapping={"last": "OLD-1", "note": "kept by the CRM"})
            await client.hset("customer:c7", mapping={"last": "OLD-7"})

            async def held() -> dict[bytes, Any]:
                return {key: await client.hgetall(key) async for key in client.scan_iter(match="customer:*")}

            before = await held()
            assert {cluster.owner(f"customer:c{i}") for i in range(20)} == set(cluster.primaries)

            code, out, err = await asyncio.to_thread(cli, "migrate", "run", "payments")
            assert code == 0, err
            report = json.loads(out)
            [customers] = report["subscribers"]
            assert customers["checksums_equal"] and customers["records"] == 20, customers  # a key per customer
            assert await client.hgetall("customer:c19") == {b"last": b"P-059", b"amount": b"5900"}

            code, out, err = await asyncio.to_thread(cli, "migrate", "rollback", report["run"])
            assert code == 0, out + err
            assert await held() == before
        finally:
            await client.aclose()


async def test_a_cluster_that_takes_only_tls_is_read_and_written_over_rediss(tmp_path: Path, bootstrap: str) -> None:
    """A cluster whose nodes take only TLS, from clients and from each other (managed services'
    in-transit encryption): the hub finds the nodes through one rediss:// url and its CA, and
    reads the stream and writes the keys over every node."""
    from tests.support.certs import Authority

    authority = Authority(tmp_path / "ca", "Cache CA")
    served = authority.issue("redis", peer=True)
    with redis_cluster(tls=(served.cert, served.key, authority.cert)) as cluster:
        config = cluster_flow(bootstrap, cluster.url())
        for adapter in (*config["inbound"], *config["outbound"]):
            adapter["tls"] = {"ca": str(authority.cert)}
        client = RedisCluster.from_url(cluster.url(), ssl_ca_certs=str(authority.cert))
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)):
                for i in range(12):
                    await client.xadd("orders", order(i))
                await settled(client, 12)
            assert {cluster.owner(f"payment:n{i}") for i in range(12)} == set(cluster.primaries)
        finally:
            await client.aclose()
