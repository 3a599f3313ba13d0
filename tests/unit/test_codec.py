from __future__ import annotations

import io
import struct
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastavro import schemaless_reader

from bus.codec import Codec, UnknownSchemaId
from bus.errors import EventRejected, PermanentError
from schemas.catalog import SchemaCatalog


@pytest.fixture
def codec() -> Codec:
    catalog = SchemaCatalog.load()
    c = Codec()
    c.add("Payment", 42, catalog.get("Payment").parsed)
    return c


PAYMENT = {"payment_id": "pi_1", "amount": 1999, "currency": "usd", "customer_id": None, "status": "succeeded", "description": None}


def test_confluent_wire_format(codec: Codec) -> None:
    value = codec.encode("Payment", PAYMENT)
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == 42
    # Any Avro reader with the same schema reads the body: the format is not ours alone.
    parsed = SchemaCatalog.load().get("Payment").parsed
    assert schemaless_reader(io.BytesIO(value[5:]), parsed, None) == PAYMENT
    assert codec.decode(value) == ("Payment", PAYMENT)


def test_validate_names_the_field(codec: Codec) -> None:
    with pytest.raises(EventRejected, match=r"Payment.*amount"):
        codec.validate("Payment", {**PAYMENT, "amount": "lots"})
    with pytest.raises(EventRejected, match="payment_id"):
        codec.validate("Payment", {k: v for k, v in PAYMENT.items() if k != "payment_id"})


def test_a_lone_surrogate_is_refused_naming_its_field(codec: Codec) -> None:
    """JSON's "\\ud800" parses to a lone surrogate, which UTF-8 cannot hold: the refusal names the
    field, where it used to quote the codec ("'utf-8' codec can't encode...")."""
    with pytest.raises(EventRejected, match=r"customer_id holds a lone surrogate \(U\+DC00\)"):
        codec.encode("Payment", {**PAYMENT, "customer_id": "M\udc00ller"})


def test_defaults_fill_missing_optional_fields(codec: Codec) -> None:
    minimal = {"payment_id": "pi_2", "amount": 5, "currency": "eur"}
    codec.validate("Payment", minimal)
    assert codec.decode(codec.encode("Payment", minimal))[1]["status"] == "succeeded"


@pytest.mark.parametrize("payload", [b"", b"\x01\x00\x00\x00\x2a", b"{json}"])
def test_not_wire_format(codec: Codec, payload: bytes) -> None:
    with pytest.raises(PermanentError):
        codec.decode(payload)


def test_unknown_schema_id(codec: Codec) -> None:
    with pytest.raises(UnknownSchemaId, match="schema id 7 is not registered"):
        codec.decode(b"\x00\x00\x00\x00\x07\x02")


def test_truncated_body(codec: Codec) -> None:
    value = codec.encode("Payment", PAYMENT)
    with pytest.raises(PermanentError, match="undecodable Avro body"):
        codec.decode(value[:8])


async def test_records_naming_schema_ids_in_a_flood_do_not_hold_the_reader_on_the_registry(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records a producer outside the hub wrote with random schema ids (or bytes that only look
    like the wire format) were each looked up in the registry, one round trip per record in the
    reading loop, and every id the registry did not have was remembered for ever. Now at most 20
    new ids a second are asked about; the rest are not known yet (dead-lettered as not
    registered, replayable), and the ids remembered as unknown are bounded."""
    import bus.codec

    asked: list[int] = []

    async def registry(schema_id: int) -> str:
        asked.append(schema_id)
        raise PermanentError("schema not found")  # what the registry's 404 becomes

    codec.fetch_writer = registry
    flood = [struct.pack(">bI", 0, 1_000_000 + i) + b"junk" for i in range(500)]
    began = time.monotonic()
    await codec.learn_ids(flood)
    refilled = 20 * (time.monotonic() - began)  # 20 a second refill while the loop runs: more on a slow machine
    assert 1 <= len(asked) <= 20 + refilled + 1, (len(asked), refilled)  # the budget, and what refilled meanwhile
    for payload in flood[:3] + flood[-3:]:
        with pytest.raises(UnknownSchemaId):
            codec.decode(payload)

    monkeypatch.setattr(bus.codec, "_MOST_UNKNOWN", 5)
    monkeypatch.setattr(bus.codec, "_LOOKUPS_PER_S", 1_000_000)
    codec._budget = 1_000_000.0
    await codec.learn_ids(struct.pack(">bI", 0, 2_000_000 + i) for i in range(50))
    assert len(codec._unknown) <= 5  # forgotten past the bound: only asked about again


@pytest.mark.parametrize(
    "moment",
    [datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))), datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))],
    ids=["after-9999", "before-year-1"],
)
def test_a_time_no_reader_can_return_is_refused_where_it_is_made_and_read_as_a_dead_letter(moment: datetime) -> None:
    """9999-12-31T23:59:59-14:00 is in Python's calendar and Avro writes it, but it is the year
    10000 in UTC, and reading it back raised OverflowError: a sender's time passed the webhook
    (202), and the record stopped the router at every start. It is refused where the event is
    made, naming the field; one written by a producer outside the hub is an unreadable record."""
    catalog = SchemaCatalog.load()
    codec = Codec()
    codec.add("Refund", 7, catalog.get("Refund").parsed)
    refund = {"refund_id": "re_1", "payment_id": "pi_1", "amount": 100, "currency": "usd", "reason": None, "status": "succeeded"}
    codec.validate("Refund", {**refund, "created_at": datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=-14)))})  # in range
    with pytest.raises(EventRejected, match=r"^does not match schema Refund: created_at is .*, outside the years 1 to 9999 in UTC$"):
        codec.validate("Refund", {**refund, "created_at": moment})
    written = codec.encode("Refund", {**refund, "created_at": moment})  # as a producer that does not check would write it
    with pytest.raises(PermanentError, match="undecodable Avro body for schema Refund"):
        codec.decode(written)
