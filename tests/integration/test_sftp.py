"""The ``sftp`` adapters against a real OpenSSH server the test starts (tests/support/sftp_private.py)
and the real embedded broker. In: files uploaded become events and move to done/ on the server with
a manifest, a bad row is kept with its line number, a file uploaded twice is skipped, one still
being uploaded waits, and a server that shows another host key, refuses the login or will not let
files be moved out is said, with nothing fetched; a password login (against asyncssh's server,
since an unprivileged sshd cannot check one) fetches, and a wrong password is refused. Out:
rolling files the partner only sees whole, a crash's leftover completed, and a connection cut
mid-file costing no line and doubling none."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bus.app.hub import Hub
from bus.errors import ConfigError
from bus.kafka.reader import read_topic
from bus.ports import free_port
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, load, payment, payment_hub_config, unique_prefix, write_config
from tests.support.proxy import TcpProxy
from tests.support.sftp_private import SftpServer, sftp_server
from tests.support.target import Target
from tests.support.wait import health_saying, healthy, until

pytestmark = pytest.mark.timeout(180)

EMIT = {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "int(cents)", "currency": "lower(cur)"}}


@pytest.fixture(scope="module")
def server() -> Any:
    with sftp_server() as found:
        yield found


def hub_config(bootstrap: str, inbound: dict[str, Any]) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [{"name": "partner", "type": "sftp", "poll_interval": "200ms", "settle": "0s", "emit": EMIT, **inbound}],
    }


def drop(server: SftpServer, name: str) -> Path:
    """A drop folder of its own for one test, on the same server."""
    folder = server.folder / name
    folder.mkdir()
    os.chown(folder, *server.owner)
    return folder


async def payments(hub: Hub) -> list[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
    return sorted(dict(r.headers)["ce_id"].decode() for r in records)


async def moved(path: Path, timeout: float = 30) -> dict[str, Any]:
    """The manifest beside ``path`` once the file is there."""
    manifest = path.with_name(path.name + ".manifest.json")
    for _ in range(int(timeout / 0.1)):
        if manifest.exists() and path.exists():
            return dict(json.loads(manifest.read_text()))
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not appear; the folder holds {sorted(p.name for p in path.parent.parent.rglob('*'))}")


async def test_uploaded_files_become_events_and_move_to_done_on_the_server(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    folder = drop(server, "orders")
    csv_bytes = b"ref,cents,cur\nr1,100,EUR\nr2,oops,EUR\nr3,300\nr4,400,USD\n"
    server.put("orders-1.csv", csv_bytes, into=folder)
    server.put("orders-2.jsonl", b'{"ref": "j1", "cents": "5", "cur": "USD"}\n{broken\n', into=folder)
    server.put("notes.txt", b"not taken: another pattern", into=folder)
    config = hub_config(bootstrap, server.config(path=str(folder), pattern="orders-*"))
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        first = await moved(folder / "done" / "orders-1.csv")
        assert (first["rows"], first["accepted"], first["rejected"]) == (4, 2, 2), first
        assert (folder / "done" / "orders-1.csv").read_bytes() == csv_bytes, "moved as it was"
        second = await moved(folder / "done" / "orders-2.jsonl")
        assert (second["rows"], second["accepted"], second["rejected"]) == (2, 1, 1), second
        ids = await payments(hub)
        assert len(ids) == 3 and all(i.endswith((":2", ":5", ":1")) for i in ids), ids
        parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("partner"))
        origins = sorted(dict(r.headers)["bus_origin"].decode() for r in parked)
        assert origins == ["sftp:orders-1.csv:3", "sftp:orders-1.csv:4", "sftp:orders-2.jsonl:2"], origins
        assert (folder / "notes.txt").exists(), "another pattern: left alone"

        # The same content again under another name: not imported twice.
        server.put("orders-3.csv", csv_bytes, into=folder)
        skipped = await moved(folder / "skipped" / "orders-3.csv")
        assert skipped["duplicate_of"]["file"] == "orders-1.csv", skipped
        # A file that cannot be read as a whole (no header) goes to failed/ with the reason.
        server.put("orders-4.csv", b"", into=folder)
        failed = await moved(folder / "failed" / "orders-4.csv")
        assert "no CSV header row" in failed["error"], failed
        # A link in a folder others may write to could point the hub at any file the account reads.
        (folder / "orders-5.csv").symlink_to("/etc/passwd")
        os.chown(folder / "orders-5.csv", *server.owner, follow_symlinks=False)
        linked = await moved(folder / "failed" / "orders-5.csv")
        assert "orders-5.csv is a symbolic link" in linked["error"] and linked["sha256"] == "none", linked
        await asyncio.sleep(0.5)
        assert len(await payments(hub)) == 3, "nothing published twice"
        assert hub.inbound[0].progress()["files"] == 2


async def test_a_file_still_being_uploaded_waits_until_it_settles(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    folder = drop(server, "slow")
    config = hub_config(bootstrap, server.config(path=str(folder), settle="3s"))
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        part = server.put("batch.csv", b"ref,cents,cur\nr1,100,EUR\n", into=folder)
        await asyncio.sleep(1.0)  # five looks: it has not stayed the same for settle yet
        with part.open("ab") as handle:  # the upload goes on
            handle.write(b"r2,200,EUR\n")
        manifest = await moved(folder / "done" / "batch.csv")
        assert manifest["accepted"] == 2, manifest
        assert len(await payments(hub)) == 2


async def test_another_host_key_or_a_refused_login_is_said_and_nothing_fetched(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        import asyncssh

    folder = drop(server, "guarded")
    server.put("orders.csv", b"ref,cents,cur\nr1,100,EUR\n", into=folder)
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    imposter = stranger.export_public_key().decode().strip()
    config = hub_config(bootstrap, server.config(path=str(folder), host_key=f"127.0.0.1 {imposter}"))
    async with build_hub(write_config(tmp_path / "imposter.yaml", config)) as hub:
        health = await health_saying(hub.inbound[0], "the server's host key is not the one configured")
        assert not health.ok and "ssh-keyscan -p" in health.detail, health
    config = hub_config(bootstrap, server.config(path=str(folder), private_key=stranger.export_private_key().decode()))
    async with build_hub(write_config(tmp_path / "stranger.yaml", config)) as hub:
        health = await health_saying(hub.inbound[0], "the login was refused")
        assert not health.ok, health
    assert (folder / "orders.csv").exists() and not (folder / "done").exists(), "nothing fetched, nothing moved"


async def test_no_file_is_fetched_while_files_cannot_be_moved_out(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    folder = drop(server, "locked")
    for sub in ("done", "failed", "skipped"):
        (folder / sub).mkdir()
        os.chown(folder / sub, *server.owner)
    (folder / "done").chmod(0o555)
    server.put("orders.csv", b"ref,cents,cur\nr1,100,EUR\n", into=folder)
    config = hub_config(bootstrap, server.config(path=str(folder)))
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        health = await health_saying(hub.inbound[0], "cannot write in", "done")
        assert not health.ok and "no file is fetched" in health.detail, health
        assert await payments(hub) == []
        (folder / "done").chmod(0o755)
        await moved(folder / "done" / "orders.csv")
        assert len(await payments(hub)) == 1
        assert (await healthy(hub.inbound[0])).ok


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host_key": None}, "give the server's `host_key`"),
        ({"host_key": "ssh-ed25519 not-base64"}, "host_key is not an SSH public key"),
        ({"private_key": None}, "give `password` or `private_key`"),
    ],
)
def test_a_server_not_named_safely_is_a_config_error(tmp_path: Path, server: SftpServer, change: dict[str, Any], message: str) -> None:
    inbound = {k: v for k, v in {**server.config(), **change}.items() if v is not None}
    config = hub_config("127.0.0.1:9092", inbound)
    with pytest.raises(ConfigError) as raised:
        load(write_config(tmp_path / "bus.yaml", config))
    assert message in str(raised.value) and "inbound[0]" in str(raised.value), raised.value


def lines_on(folder: Path, pattern: str) -> list[str]:
    return [line for f in sorted(folder.glob(pattern)) for line in f.read_text().splitlines()]


async def test_rolling_files_are_written_to_the_server_whole_and_once(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    outbox = drop(server, "outbox")
    # What a crash left on the server: two whole lines and a torn third.
    server.put("lake-20261101T000000-1-0001.jsonl.part", b'{"payment":"old_1"}\n{"payment":"old_2"}\n{"paym', into=outbox)
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["lake", "legacy"]}]
    config["outbound"] = [
        {"name": "lake", **server.config(path=str(outbox)), "type": "sftp", "roll_bytes": 1500, "delivery": {"concurrency": 16}},
        {
            "name": "legacy",
            **server.config(path=str(outbox / "csv")),  # made on the server
            "type": "sftp",
            "format": "csv",
            "body": {"PAYMENT_ID": "payment_id", "AMOUNT": "amount"},
            "roll_every": "1s",
        },
    ]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            lake, legacy = hub.outbound
            await post(hub, *(payment(i, amount=i) for i in range(60)))
            await until(lambda: int(legacy.progress()["files"]) >= 1, "the CSV file to roll by age (1s)", timeout=30)
            assert int(lake.progress()["files"]) >= 2  # ~100 bytes a line, 1,500 bytes a file
            for done in outbox.glob("*.jsonl"):  # a partner sees only whole files
                for line in done.read_text().splitlines():
                    json.loads(line)
        assert not list(outbox.rglob("*.part")), "completed at stop"
        recovered = (outbox / "lake-20261101T000000-1-0001.jsonl").read_text()
        assert recovered == '{"payment":"old_1"}\n{"payment":"old_2"}\n', "the torn line cut, the rest kept"
        events = [json.loads(line) for line in lines_on(outbox, "lake-2026*.jsonl") if '"payment_id"' in line]
        assert sorted(e["payment_id"] for e in events) == sorted(f"pi_{i}" for i in range(60)), "each once"
        rows = []
        for f in sorted((outbox / "csv").glob("*.csv")):
            lines = f.read_text().splitlines()
            assert lines[0] == "PAYMENT_ID,AMOUNT", "a header in every file"
            rows += lines[1:]
        assert sorted(r.split(",")[0] for r in rows) == sorted(f"pi_{i}" for i in range(60))
    finally:
        await target.stop()


async def test_a_connection_lost_mid_file_leaves_no_torn_or_doubled_line(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    outbox = drop(server, "cut")
    proxy = TcpProxy(free_port(), server.port)
    await proxy.start()
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["lake"]}]
    sftp = {**server.config(path=str(outbox)), "port": proxy.listen_port, "timeout_s": 2}
    config["outbound"] = [{"name": "lake", **sftp, "type": "sftp", "delivery": {"concurrency": 4}}]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            lake = hub.outbound[0]
            await post(hub, *(payment(i) for i in range(20)))
            await until(lambda: len(lines_on(outbox, "*.part")) == 20, "the first 20 lines on the server", timeout=30)
            proxy.cut = True
            proxy.sever()
            await post(hub, *(payment(i) for i in range(20, 40)))
            health = await health_saying(lake, "writing", timeout=20)
            assert not health.ok, health
            proxy.cut = False
            await until(lambda: len(lines_on(outbox, "*.part")) == 40, "every line once the server is back", timeout=60)
            assert (await lake.health()).ok
        lines = lines_on(outbox, "*.jsonl")
        ids = sorted(json.loads(line)["payment_id"] for line in lines)
        assert ids == sorted(f"pi_{i}" for i in range(40)), "each line whole, and once"
    finally:
        await target.stop()
        await proxy.stop()


async def test_a_read_only_outbox_is_read_once_across_restarts_and_a_file_changed_in_place_again(
    tmp_path: Path, bootstrap: str, server: SftpServer
) -> None:
    """A bank's outbox the account may only read (after: keep): nothing can be moved out, so what
    was read is remembered on the checkpoint topic, by name, size and time."""
    folder = drop(server, "bank-outbox")
    server.put("statement-1.csv", b"ref,cents,cur\nr1,100,EUR\nr2,200,EUR\n", into=folder)
    folder.chmod(0o555)  # the account may list and read, not write
    config = hub_config(bootstrap, server.config(path=str(folder), after="keep"))
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path) as hub:
            for _ in range(100):
                if len(await payments(hub)) == 2:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # five more looks: read once
            assert len(await payments(hub)) == 2 and (await healthy(hub.inbound[0])).ok  # a lease joined again under load waits
        async with build_hub(path) as hub:  # a restart: remembered, not read again
            await asyncio.sleep(1.5)
            assert len(await payments(hub)) == 2
            folder.chmod(0o755)
            (folder / "statement-1.csv").write_bytes(b"ref,cents,cur\nr1,100,EUR\nr2,200,EUR\nr3,300,EUR\n")  # changed in place
            os.utime(folder / "statement-1.csv", (1, 1))
            server.put("statement-2.csv", b"ref,cents,cur\nr1,100,EUR\nr2,200,EUR\n", into=folder)  # the first one's content again
            for _ in range(100):
                if len(await payments(hub)) == 5:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            ids = await payments(hub)
            assert len(ids) == 5, ids  # the changed file's three rows (new ids: another digest); the copy skipped
            assert (folder / "statement-1.csv").exists() and (folder / "statement-2.csv").exists(), "kept where they were"
            assert not (folder / "done").exists()
    finally:
        folder.chmod(0o755)


async def test_after_delete_removes_each_file_once_read(tmp_path: Path, bootstrap: str, server: SftpServer) -> None:
    folder = drop(server, "outbox-delete")
    server.put("orders.csv", b"ref,cents,cur\nr1,100,EUR\n", into=folder)
    config = hub_config(bootstrap, server.config(path=str(folder), after="delete"))
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        for _ in range(100):
            if not (folder / "orders.csv").exists():
                break
            await asyncio.sleep(0.2)
        assert not (folder / "orders.csv").exists() and not (folder / "done").exists()
        assert len(await payments(hub)) == 1
        server.put("orders.csv", b"ref,cents,cur\nr1,100,EUR\nr9,900,EUR\n", into=folder)  # the partner's next export, same name
        for _ in range(100):
            if len(await payments(hub)) == 3:
                break
            await asyncio.sleep(0.2)
        assert len(await payments(hub)) == 3 and not (folder / "orders.csv").exists()


async def test_a_known_hosts_file_names_the_server_as_openssh_writes_it(tmp_path: Path, server: SftpServer) -> None:
    from adapters.sftp.config import SftpServer as ServerConfig
    from adapters.sftp.connection import SftpRefused, open_sftp

    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {server.host_key}\n")
    settings = {k: v for k, v in server.config().items() if k not in ("host_key", "path")}
    connection, client = await open_sftp(ServerConfig.model_validate({**settings, "known_hosts": known}))
    try:
        assert await client.isdir(str(server.folder))
    finally:
        connection.close()
    known.write_text(f"[127.0.0.1]:{server.port + 1} {server.host_key}\n")  # another server's entry: this one is unknown
    with pytest.raises(SftpRefused, match="host key is not the one configured"):
        await open_sftp(ServerConfig.model_validate({**settings, "known_hosts": known}))


async def test_a_file_that_fails_unforeseen_or_vanishes_after_the_listing_leaves_the_next_files_to_go_on(
    tmp_path: Path, bootstrap: str, server: SftpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Faults injected at the two seams no real input reaches on purpose: a file taken away by
    another reader between the listing and its fetch is passed over; a failure no one foresaw
    while one file is imported sends that file to failed/ with the reason. The files after each
    are imported as usual, and the adapter keeps watching."""
    from adapters.sftp import inbound

    folder = drop(server, "poison")
    for name in ("a-gone.csv", "b-poison.csv", "c-fine.csv"):
        server.put(name, f"ref,cents,cur\n{name[0]}1,100,EUR\n".encode(), into=folder)
    listed, publish = inbound.SftpInbound._ready, inbound.publish_rows

    async def ready_then_taken_away(self: Any) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = await listed(self)
        (folder / "a-gone.csv").unlink(missing_ok=True)  # another reader took it
        return found

    async def publish_failing_one(*args: Any, origin: str, **kwargs: Any) -> dict[str, int]:
        if origin == "sftp:b-poison.csv":
            raise RuntimeError("an unforeseen failure")
        return await publish(*args, origin=origin, **kwargs)

    monkeypatch.setattr(inbound.SftpInbound, "_ready", ready_then_taken_away)
    monkeypatch.setattr(inbound, "publish_rows", publish_failing_one)
    caplog.set_level(logging.INFO, logger="adapters.sftp")
    config = hub_config(bootstrap, server.config(path=str(folder)))
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        failed = await moved(folder / "failed" / "b-poison.csv")
        assert failed["error"] == "b-poison.csv: it could not be imported: RuntimeError: an unforeseen failure", failed
        done = await moved(folder / "done" / "c-fine.csv")
        assert done["accepted"] == 1, done
        assert [i.split(":")[-1] for i in await payments(hub)] == ["2"], "only c-fine.csv's row"
        assert "a-gone.csv is no longer in the folder; passed over" in caplog.text
        assert not (folder / "failed" / "a-gone.csv").exists()
        server.put("d-later.csv", b"ref,cents,cur\nd1,100,EUR\n", into=folder)
        await moved(folder / "done" / "d-later.csv")
        assert hub.inbound[0].progress()["files"] == 2


async def test_a_password_login_fetches_and_a_wrong_password_is_refused_with_nothing_fetched(tmp_path: Path, bootstrap: str) -> None:
    # An unprivileged sshd cannot check a password (tests/support/sftp_private.py), so this one
    # logs in to asyncssh's own SFTP server, which takes the password over the same SSH protocol.
    from examples.kit.sftp_server import SftpStandIn

    bank = await SftpStandIn("acme-hub", ("in",), password="s3cret-Pa55").start()
    try:
        login = {"host": "127.0.0.1", "port": bank.port, "username": "acme-hub", "host_key": bank.host_key, "path": "/in"}
        bank.drop("/in/orders.csv", b"ref,cents,cur\nr1,100,EUR\nr2,200,USD\n")
        config = hub_config(bootstrap, {**login, "password": "not-it"})
        async with build_hub(write_config(tmp_path / "wrong.yaml", config)) as hub:
            health = await health_saying(hub.inbound[0], "the login was refused")
            assert not health.ok and "password" in health.detail, health
            assert await payments(hub) == []
        assert bank.path("/in/orders.csv").exists() and not bank.path("/in/done").exists(), "nothing fetched, nothing moved"
        config = hub_config(bootstrap, {**login, "password": "s3cret-Pa55"})
        async with build_hub(write_config(tmp_path / "right.yaml", config)) as hub:
            await moved(bank.path("/in/done/orders.csv"))
            assert len(await payments(hub)) == 2
            assert (await healthy(hub.inbound[0])).ok
    finally:
        await bank.stop()


async def test_names_a_server_lists_that_reach_outside_the_folder_are_passed_over(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that lists ``../outside.csv`` or ``inner/deep.csv`` in the drop folder (a bug of
    its own, or a hostile one): joined to the folder's path, such a name is another folder's
    file, which the hub fetched, published and moved away. No file in the folder can have such a
    name: it is passed over and said (WARNING, the console's "need attention"), and the folder's
    own files are read as usual."""
    from tests.support.hostile_sftp import hostile_sftp

    root = tmp_path / "server"
    (root / "drop" / "inner").mkdir(parents=True)
    (root / "outside.csv").write_bytes(b"ref,cents,cur\nout1,100,EUR\n")
    (root / "drop" / "inner" / "deep.csv").write_bytes(b"ref,cents,cur\ndeep1,100,EUR\n")
    (root / "drop" / "own.csv").write_bytes(b"ref,cents,cur\nown1,100,EUR\n")
    async with hostile_sftp(root, [b"../outside.csv", b"inner/deep.csv"]) as server:
        config = hub_config(bootstrap, server.config("/drop", pattern="*.csv"))
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await moved(root / "drop" / "done" / "own.csv")
            [partner] = hub.inbound
            await until(lambda: "'../outside.csv', 'inner/deep.csv'" in partner.attention(), "the names said", timeout=30)
            await asyncio.sleep(1.0)  # five more polls: nothing else is taken
            assert [i.split(":")[-1] for i in await payments(hub)] == ["2"], "only own.csv's row"
            assert (root / "outside.csv").exists() and (root / "drop" / "inner" / "deep.csv").exists()
            assert not (root / "done").exists() and not (root / "drop" / "inner" / "done").exists()
            said = [r for r in caplog.records if "reaches outside the folder" in r.getMessage()]
            assert [r.levelname for r in said] == ["WARNING", "WARNING"], caplog.text  # once per name, not at every poll
