"""The nats adapters against NATS servers that want to know who the hub is: decentralized auth
(a ``.creds`` file: the user's JWT signed by an account the server's operator signed, as nsc,
Synadia Cloud and NGS make them) and nkey users. Private nats-servers of the test's own, the real
hub and embedded broker; the accounts and keys are made as nsc makes them (tests/support/nats_accounts.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from adapters.nats.config import NatsOutboundConfig
from adapters.nats.outbound import NatsOutbound
from bus.adapter_api import Context, RetryableError
from bus.app.cli import main
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.nats_accounts import Operator, Pair, write
from tests.support.nats_private import private_nats
from tests.support.silent_server import left_running_after_cancelling, silent_server

pytestmark = pytest.mark.timeout(120)


def hub_config(bootstrap: str, port: int, run: str, auth: dict[str, str]) -> dict[str, Any]:
    """NATS stream in -> route -> NATS stream out, both through ``auth``."""
    url = f"nats://127.0.0.1:{port}"
    emit = {"schema": "Payment", "id": "id", "key": "id", "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"'}}
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [{"name": "orders", "type": "nats", "url": url, "stream": f"IN_{run}", "subject": f"in{run}.>", "emit": emit, **auth}],
        "routes": [{"name": "all", "from": "Payment", "to": ["ledger"]}],
        "outbound": [{"name": "ledger", "type": "nats", "url": url, "subject": f"out{run}.paid", "body": {"id": "$id"}, **auth}],
    }


async def round_trip(tmp_path: Path, bootstrap: str, port: int, auth: dict[str, str], client: dict[str, Any]) -> None:
    """Messages published to the inbound stream come out on the outbound stream, through the hub."""
    run = uuid.uuid4().hex[:8]
    connection = await nats.connect(f"nats://127.0.0.1:{port}", **client)
    try:
        js = connection.jetstream()
        await js.add_stream(name=f"IN_{run}", subjects=[f"in{run}.>"])
        await js.add_stream(name=f"OUT_{run}", subjects=[f"out{run}.>"])
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, port, run, auth))):
            for i in range(5):
                await js.publish(f"in{run}.new", json.dumps({"id": f"o{i}", "seq": i}).encode())

            for _ in range(300):
                if (await js.stream_info(f"OUT_{run}")).state.messages == 5:
                    break
                await asyncio.sleep(0.1)
        out = await js.pull_subscribe(f"out{run}.>", durable="check", stream=f"OUT_{run}")
        assert sorted(json.loads(m.data)["id"] for m in await out.fetch(10, timeout=2)) == [f"o{i}" for i in range(5)]
    finally:
        await connection.close()


def outbound(port: int, **auth: Any) -> NatsOutbound:
    config = NatsOutboundConfig.model_validate(
        {"type": "nats", "name": "ledger", "url": f"nats://127.0.0.1:{port}", "subject": "x", **auth}
    )
    return NatsOutbound(config, Context("ledger", logging_for("ledger")))


def logging_for(name: str) -> Any:
    import logging

    return logging.getLogger(f"bus.adapter.{name}")


async def test_a_server_in_operator_mode_takes_the_hubs_creds_file_and_refuses_others_saying_why(tmp_path: Path, bootstrap: str) -> None:
    operator = Operator.new()
    hub_creds = write(tmp_path / "hub.creds", operator.user_creds("hub"))
    with private_nats(operator.server_config()) as port:
        await round_trip(tmp_path, bootstrap, port, {"credentials": str(hub_creds)}, {"user_credentials": str(hub_creds)})

        # A user of an account this server does not know: refused, said at once (not after the 10 s bound).
        stranger = write(tmp_path / "stranger.creds", operator.user_creds("x", signer=Pair.new(nkeys.PREFIX_BYTE_ACCOUNT)))
        started = time.monotonic()
        with pytest.raises(RetryableError) as caught:
            await outbound(port, credentials=str(stranger)).start()
        assert "the server refused the credentials file (authorization violation)" in str(caught.value), caught.value
        assert time.monotonic() - started < 8, "a refusal is final: not waited out"

        # No credentials at all: the server's answer says the same of the URL.
        with pytest.raises(RetryableError) as caught:
            await outbound(port).start()
        assert "refused the URL's user and password or token" in str(caught.value), caught.value


async def test_a_server_of_nkey_users_takes_the_hubs_seed(tmp_path: Path, bootstrap: str) -> None:
    hub = Pair.new(nkeys.PREFIX_BYTE_USER)
    seed = write(tmp_path / "hub.nk", hub.seed + "\n")
    with private_nats(f'authorization {{ users = [ {{ nkey: "{hub.public}" }} ] }}\n') as port:
        await round_trip(tmp_path, bootstrap, port, {"nkey_seed": str(seed)}, {"nkeys_seed": str(seed)})
        other = write(tmp_path / "other.nk", Pair.new(nkeys.PREFIX_BYTE_USER).seed)
        with pytest.raises(RetryableError) as caught:
            await outbound(port, nkey_seed=str(other)).start()
        assert "the server refused the nkey seed (authorization violation)" in str(caught.value), caught.value


def test_bus_validate_says_what_is_wrong_with_a_creds_or_seed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    operator = Operator.new()
    user = Pair.new(nkeys.PREFIX_BYTE_USER)
    good = operator.user_creds("x")
    files = {
        # nats-py's own reader loops for ever on a file without a JWT block: the hub reads it first.
        "no-jwt.creds": (f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n", "has no user JWT block ("),
        "expired.creds": (operator.user_creds("old", expires=int(time.time()) - 3600), "its user JWT expired at"),
        "account-seed.creds": (
            good.replace(next(x for x in good.splitlines() if x.startswith("SU")), operator.account.seed),
            "an account's",
        ),
        "not-a-jwt.creds": (good.replace(next(x for x in good.splitlines() if x.startswith("ey")), "hello"), "its user JWT is not a JWT"),
        "damaged.nk": (user.seed[:-3] + "AAA", "its seed is damaged"),
        "account.nk": (operator.account.seed, "its seed is an account's or an operator's seed"),
    }
    for name, (text, expected) in files.items():
        write(tmp_path / name, text)
        field = "nkey_seed" if name.endswith(".nk") else "credentials"
        config = {
            "kafka": {"bootstrap": "127.0.0.1:9"},
            "inbound": [{"name": "orders", "type": "nats", "url": "nats://127.0.0.1:9", "stream": "S", "subject": "s.>",
                         "emit": {"schema": "Payment"}, field: name}],
        }  # fmt: skip
        path = write_config(tmp_path / "bus.yaml", config)
        assert main(["validate", "--json", "-c", str(path)]) == 2, name
        errors = {e["field"]: e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}
        message = errors.get(f"inbound[0].{field}", "")
        assert str(tmp_path / name) in message and expected in message, (name, errors)
        assert user.seed not in message and operator.account.seed not in message, "a seed is never shown"
    both = {"type": "nats", "name": "x", "url": "nats://127.0.0.1:9", "subject": "x", "credentials": "a", "nkey_seed": "b"}
    with pytest.raises(ValueError, match="not both"):
        NatsOutboundConfig.model_validate(both)


async def test_a_connection_cancelled_while_it_is_made_leaves_nothing_running() -> None:
    """A hub that stops while a NATS adapter is still connecting (a server slow to answer) cancels
    that start: the client is closed, not left trying to connect for ever in the background."""
    async with silent_server() as port:  # accepts and never says INFO: the client waits
        left = await left_running_after_cancelling(outbound(port).start())
        assert left == [], [t.get_coro() for t in left]
