"""The http_webhook inbound adapter over the real broker: every answer it can give."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastavro import schemaless_reader

from bus.app.hub import Hub
from schemas.catalog import SchemaCatalog
from tests.support.hub import build_hub, payment, payment_hub_config, write_config


@pytest.fixture
async def hub(tmp_path: Path, bootstrap: str) -> AsyncIterator[Hub]:
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, "http://127.0.0.1:9"))
    instance = build_hub(config, role="inbound")
    async with instance:
        yield instance


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.web is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as c:
        yield c


async def read_canonical(hub: Hub, count: int) -> list:
    topic = hub.topics.canonical("Payment")
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        for _ in range(50):
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            if len(records) >= count:
                break
        return records
    finally:
        await consumer.stop()


async def test_accepted_event_is_on_kafka_in_canonical_form(hub: Hub, client: httpx.AsyncClient) -> None:
    response = await client.post("/hooks/payments", json=payment(1), headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    assert response.status_code == 202
    assert response.json() == {"id": "evt_1"}
    [record] = await read_canonical(hub, 1)
    headers = dict(record.headers)
    assert record.key == b"pi_1"
    assert headers["ce_id"] == b"evt_1"
    assert headers["ce_type"] == b"Payment"
    assert headers["ce_source"] == b"/inbound/payments"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["traceparent"] == b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    assert headers["ce_time"].endswith(b"Z")
    # Confluent wire format, readable with the registered schema and nothing of ours.
    assert record.value[0] == 0
    assert int.from_bytes(record.value[1:5], "big") == hub.codec.schema_id("Payment")
    body = schemaless_reader(io.BytesIO(record.value[5:]), SchemaCatalog.load().get("Payment").parsed, None)
    assert body == {
        "payment_id": "pi_1",
        "amount": 150_000,
        "currency": "usd",
        "customer_id": "cus_1",
        "status": "succeeded",
        "description": None,
    }


async def test_bad_json_is_400_with_reason(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/payments", content=b'{"id": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("invalid JSON: Expecting value: line 1 column 8")


async def test_json_that_is_not_an_object_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/payments", json=[1, 2])
    assert r.status_code == 400
    assert r.json()["error"] == "expected a JSON object, got list"


async def test_schema_mismatch_is_400_naming_the_field_and_nothing_is_produced(hub: Hub, client: httpx.AsyncClient) -> None:
    bad = payment(2)
    bad["data"]["amount"] = "a lot"
    r = await client.post("/hooks/payments", json=bad)
    assert r.status_code == 400
    assert "does not match schema Payment" in r.json()["error"]
    assert "Payment.amount" in r.json()["error"]
    missing = payment(3)
    del missing["data"]["id"]
    r = await client.post("/hooks/payments", json=missing)
    assert r.status_code == 400 and "payment_id" in r.json()["error"]
    ok = await client.post("/hooks/payments", json=payment(4))
    assert ok.status_code == 202
    assert [r.key for r in await read_canonical(hub, 1)] == [b"pi_4"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_failed_auth_is_401(hub: Hub, headers: dict[str, str]) -> None:
    assert hub.web is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as anonymous:
        r = await anonymous.post("/hooks/payments", json=payment(5), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "missing or invalid API key in header X-API-Key"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = payment(6)
    big["padding"] = "x" * 5000  # the test config allows 4096 bytes
    r = await client.post("/hooks/payments", json=big)
    assert r.status_code == 413
    assert "exceeds the limit of 4096" in r.json()["error"]


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"id": "evt_7", "padding": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = await client.post("/hooks/payments", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post("/hooks/payments", content=b"id=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


async def test_a_compressed_body_is_415_saying_so_not_invalid_json(client: httpx.AsyncClient) -> None:
    """A sender that gzips its body used to get 400 "invalid JSON: 'utf-8' codec can't decode byte
    0x8b": the answer RFC 9110 gives is 415, with the codings accepted."""
    import gzip
    import json

    r = await client.post(
        "/hooks/payments",
        content=gzip.compress(json.dumps(payment(8)).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 415 and r.headers["Accept-Encoding"] == "identity"
    assert r.json()["error"] == "Content-Encoding 'gzip' is not accepted here; send the body uncompressed"
    same = await client.post("/hooks/payments", json=payment(8), headers={"Content-Encoding": "identity"})
    assert same.status_code == 202


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    assert (await client.post("/hooks/nope", json={})).status_code == 404
    assert (await client.get("/hooks/payments")).status_code == 405


async def test_a_batch_is_stored_whole_or_refused_whole(tmp_path: Path, bootstrap: str) -> None:
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    config["inbound"][0]["batch"] = True  # the body is a JSON array, as HubSpot and SendGrid send
    async with build_hub(write_config(tmp_path / "bus.yaml", config), role="inbound") as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
            bad = payment(2)
            bad["data"]["amount"] = "a lot"
            refused = await client.post("/hooks/payments", json=[payment(1), bad, payment(3)])
            assert refused.status_code == 400 and refused.json()["error"].startswith("element 1: does not match schema Payment")
            not_a_list = await client.post("/hooks/payments", json=payment(4))
            assert not_a_list.status_code == 400 and "batch: expected a JSON array, got dict" in not_a_list.json()["error"]
            accepted = await client.post("/hooks/payments", json=[payment(5), payment(6), payment(7)])
            assert accepted.status_code == 202 and accepted.json() == {"ids": ["evt_5", "evt_6", "evt_7"]}
        stored = await read_canonical(hub, 3)
        assert sorted(r.key for r in stored) == [b"pi_5", b"pi_6", b"pi_7"]  # nothing of the refused batch


async def test_a_body_too_slow_is_408_and_one_cut_off_is_dropped_with_nothing_produced(tmp_path: Path, bootstrap: str) -> None:
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    config["inbound"][0]["body_timeout"] = "1s"
    async with build_hub(write_config(tmp_path / "bus.yaml", config), role="inbound") as hub:
        assert hub.web is not None
        body = json.dumps(payment(8)).encode()
        head = (
            f"POST /hooks/payments HTTP/1.1\r\nHost: hub\r\nX-API-Key: k1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        # Half the body, then nothing: answered 408 once body_timeout passed, and the connection closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.web.port)
        writer.write(head + body[:10])
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer and b"did not arrive within" in answer
        writer.close()
        # Half the body, then the client goes: nothing is produced, and the hub goes on serving.
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.web.port)
        writer.write(head + body[:10])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
            assert (await client.post("/hooks/payments", json=payment(9))).status_code == 202
        assert [r.key for r in await read_canonical(hub, 2)] == [b"pi_9"]  # not pi_8


async def test_a_legacy_charset_is_read_as_declared_and_an_unknown_one_is_415(tmp_path: Path, bootstrap: str) -> None:
    """A legacy system posts ISO-8859-1 or windows-1252 and says so (`charset=`). Read as UTF-8,
    it was refused as invalid JSON (or its form field was garbled): now the declared charset
    decodes JSON and form bodies; one Python does not know is 415, saying so."""
    spec = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    form_map = {"payment_id": "id", "amount": "int(amount)", "currency": '"eur"', "customer_id": "customer"}
    spec["inbound"].append(
        {
            "name": "forms",
            "type": "http_webhook",
            "path": "/hooks/forms",
            "accept": ["form"],
            "emit": {"schema": "Payment", "id": "id", "map": form_map},
        }
    )
    async with build_hub(write_config(tmp_path / "bus.yaml", spec), role="inbound") as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
            latin = payment(1)
            latin["data"]["customer"] = "Müller"
            body = json.dumps(latin, ensure_ascii=False).encode("iso-8859-1")
            assert (await client.post("/hooks/payments", content=body, headers={"Content-Type": "application/json"})).status_code == 400
            posted = await client.post("/hooks/payments", content=body, headers={"Content-Type": "application/json; charset=ISO-8859-1"})
            assert posted.status_code == 202, posted.text
            cp1252 = payment(2)
            cp1252["data"]["customer"] = "Café €"  # 0x80 is € in windows-1252 only
            posted = await client.post(
                "/hooks/payments",
                content=json.dumps(cp1252, ensure_ascii=False).encode("windows-1252"),
                headers={"Content-Type": 'application/json; charset="windows-1252"'},
            )
            assert posted.status_code == 202, posted.text
            # A form: the charset decodes the raw bytes and the %-escapes alike.
            form = b"id=evt_3&amount=5&customer=Stra%DFe+M\xfcller"
            posted = await client.post(
                "/hooks/forms", content=form, headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}
            )
            assert posted.status_code == 202, posted.text
            refused = await client.post("/hooks/payments", content=body, headers={"Content-Type": "application/json; charset=rot13"})
            assert refused.status_code == 415 and refused.json()["error"] == "charset 'rot13' is not one this hub can read; send UTF-8"
            refused = await client.post("/hooks/payments", content=body, headers={"Content-Type": "application/json; charset=klingon"})
            assert refused.status_code == 415
        records = await read_canonical(hub, 3)
        parsed = SchemaCatalog.load().get("Payment").parsed
        customers = sorted(schemaless_reader(io.BytesIO(r.value[5:]), parsed, None)["customer_id"] for r in records)
        assert customers == ["Café €", "Müller", "Straße Müller"]
