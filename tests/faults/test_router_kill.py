"""faust-streaming #606 (an offset committed past an event still in progress) must not lose events
here: the faust-engine router, with thousands of produces in flight, is killed with SIGKILL
mid-batch and restarted, while separate inbound and outbound processes keep running. Every event
is found at the target and the ledger balances."""

from __future__ import annotations

import asyncio
import copy
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.app.cli import main
from bus.ports import free_port
from tests.faults.test_restarts import process_config
from tests.support.hub import HubProcess, unique_prefix, write_config
from tests.support.source import Source
from tests.support.target import Target

EVENTS = 6_000


@pytest.mark.timeout(360)
async def test_faust_router_killed_mid_batch_loses_nothing(tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(606)
    target = await Target().start()
    base = process_config(bootstrap, unique_prefix(), target)
    base["router"] = {"engine": "faust"}
    processes = {}
    for role in ("inbound", "router", "outbound"):
        config = copy.deepcopy(base)
        config["ops"]["port"] = free_port()
        processes[role] = HubProcess(write_config(tmp_path / f"{role}.yaml", config), config["ops"]["port"], role=role)
    router = processes["router"]
    source = Source([f"http://127.0.0.1:{base['http']['port']}/in"], concurrency=64, rate=250)
    kills_done = False
    sent: list[str] = []

    def events() -> Iterator[dict[str, Any]]:
        """At least EVENTS, and on until the last kill is done: every kill lands while events flow
        (a fixed number ran out before the third kill when a loaded machine restarted slowly)."""
        for i in itertools.count():
            if i >= EVENTS and kills_done:
                return
            sent.append(f"e{i}")
            yield {"id": f"e{i}", "key": f"k{i % 300}", "seq": i}

    try:
        for process in processes.values():
            await process.start()
        sending = asyncio.create_task(source.send_all(events()))
        for _ in range(3):
            # Kill while the router has a batch in hand: events are arriving and not all routed yet.
            await target.wait_for(lambda: len(target.accepted) > 0, timeout=60)
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            assert not sending.done()  # the kill lands while events flow
            await router.kill()
            await asyncio.sleep(rng.uniform(0, 1))
            await router.start()
        kills_done = True
        await sending
        total = len(sent)
        assert source.rejected == [] and source.accepted == total >= EVENTS
        await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == total, timeout=180)
        assert {c.headers["Idempotency-Key"] for c in target.accepted} == set(sent)
        print(f"faust router killed 3 times: {len(target.accepted) - total} of {total} events routed again after a kill, none lost")

        deadline = time.monotonic() + 60
        while True:
            capsys.readouterr()
            code = await asyncio.to_thread(main, ["reconcile", "-c", str(router.config), "--bootstrap", bootstrap])
            out = capsys.readouterr().out
            if code == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert code == 0, out
        assert f"entered {total}   delivered {total}" in out
    finally:
        for process in processes.values():
            await process.kill()
        await target.stop()
