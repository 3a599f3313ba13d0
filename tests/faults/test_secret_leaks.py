"""A secret planted through ${ENV} in a URL path, a query value, URL userinfo and an expression is
found in none of: the log at DEBUG, dead letters (headers and values), /readyz, /metrics,
whatever fails on the way (a target refusing the call, an expression failing on every event)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bus.kafka.reader import read_topic
from bus.logs import REDACTOR
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target

SECRETS = {
    "PW_SECRET": "pw-Secret.Alpha",
    "PATH_SECRET": "PathSecret Bravo",
    "QUERY_SECRET": "qsecret+charlie",
    "EXPR_SECRET": "exprsecretdelta",
}


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text or quote(value, safe="") in text or quote(value) in text]


async def test_a_planted_secret_appears_in_no_log_dead_letter_or_answer(
    tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    target = await Target(answer=lambda call: (400, {})).start()  # refuses every call: each event becomes a dead letter
    config = payment_hub_config(bootstrap, target.url)
    host = target.url.removeprefix("http://")
    config["outbound"] = [
        {
            "name": "erp",
            "type": "http",
            "url": f"http://svc:${{PW_SECRET}}@{host}/api/${{PATH_SECRET}}/items?sig=${{QUERY_SECRET}}&page=1",
            "body": {"id": "payment_id"},
        },
        {
            "name": "support",
            "type": "http",
            "url": f"{target.url}/support",
            "body": {"tag": 'substr(customer_id, int("${EXPR_SECRET}"))'},  # fails on every event, naming the expression
        },
    ]
    path = write_config(tmp_path / "bus.yaml", config)
    caplog.handler.addFilter(REDACTOR)  # as configure_logging puts it on the process's handlers
    caplog.set_level(logging.DEBUG)
    try:
        async with build_hub(path) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as ops:
            await post(hub, payment(1, status="failed"), payment(2, status="failed"))  # routed to both subscribers
            letters = []
            for subscriber in ("erp", "support"):
                found = []
                for _ in range(200):
                    found = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter(subscriber))
                    if len(found) >= 2:
                        break
                    await asyncio.sleep(0.1)
                assert len(found) >= 2, subscriber
                letters += found
            reasons = [dict(r.headers)["bus_error"].decode() for r in letters]
            assert any("answered 400" in r for r in reasons) and any("cannot evaluate" in r for r in reasons), reasons
            for record in letters:
                text = " ".join(f"{k}={v.decode(errors='replace')}" for k, v in record.headers) + (record.value or b"").decode("latin-1")
                assert not leaks(text), (leaks(text), text[:500])
            for page in ("/readyz", "/metrics"):
                assert not leaks((await ops.get(page)).text), page
    finally:
        await target.stop()
        caplog.handler.removeFilter(REDACTOR)
    assert any("dead-lettered" in r.getMessage() for r in caplog.records)  # the failures were logged...
    assert not leaks(caplog.text), leaks(caplog.text)  # ...with every secret masked
