"""Where the ``nats`` inbound is in its stream, saved in Kafka beside the durable consumer: a save
that fails and a saved position that cannot be read are said, not passed over.

Kafka here is a stand-in that takes or refuses saves (the adapter's one dependency for this)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.nats.config import NatsInboundConfig
from adapters.nats.inbound import NatsInbound
from bus.adapter_api import Context, KafkaUnavailable
from tests.support.sink import NoSink


class Kafka:
    """Positions kept by name; ``up`` False refuses saves as Kafka does while it is unreachable."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        self.saved: dict[str, dict[str, Any]] = {"orders": saved} if saved is not None else {}
        self.up = True

    async def load(self, name: str) -> dict[str, Any] | None:
        return self.saved.get(name)

    async def save(self, name: str, position: dict[str, Any]) -> None:
        if not self.up:
            raise KafkaUnavailable("no broker answered")
        self.saved[name] = position


def an_inbound(kafka: Kafka) -> NatsInbound:
    config = NatsInboundConfig.model_validate(
        {"type": "nats", "name": "orders", "url": "nats://127.0.0.1:4222", "stream": "IN", "subject": "in.>", "emit": {"schema": "Payment"}}
    )
    return NatsInbound(
        config,
        Context(name="orders", logger=logging.getLogger("bus.test.nats"), sink=NoSink(), checkpoints=kafka),  # type: ignore[arg-type]
    )


async def test_a_position_that_cannot_be_saved_is_said_once_and_its_return_too(caplog: pytest.LogCaptureFixture) -> None:
    kafka = Kafka()
    inbound = an_inbound(kafka)
    inbound._stream_made = "2026-12-06T10:00:00Z"
    caplog.set_level(logging.INFO, "bus.test.nats")
    kafka.up = False
    for sequence in (5, 6, 7):  # three saves while Kafka is away: one warning, not three, and none lost silently
        inbound._acknowledged = sequence
        await inbound._save_position()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be saved in Kafka (no broker answered)" in warnings[0], warnings
    assert "orders" not in kafka.saved

    kafka.up = True
    inbound._acknowledged = 8
    await inbound._save_position()
    assert kafka.saved["orders"] == {"sequence": 8, "stream_made": "2026-12-06T10:00:00Z"}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["nats orders: its position is saved in Kafka again (stream sequence 8)"], infos
    kafka.up = False
    inbound._acknowledged = 9
    await inbound._save_position()  # failing again after it worked: said again
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


@pytest.mark.parametrize("saved", [{"sequence": "12"}, {"sequence": -1}, {"sequence": True}, {"stream_made": "x"}])
async def test_a_saved_position_that_cannot_be_read_is_said_and_not_used(saved: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    inbound = an_inbound(Kafka(saved))
    await inbound._load_position(SimpleNamespace(created="2026-12-06T10:00:00Z"))
    assert inbound._stream_made is None and inbound._acknowledged == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and "reads stream IN from its start" in warnings[0], warnings


async def test_a_saved_position_of_this_stream_is_taken_up() -> None:
    inbound = an_inbound(Kafka({"sequence": 12, "stream_made": "2026-12-06T10:00:00Z"}))
    await inbound._load_position(SimpleNamespace(created="2026-12-06T10:00:00Z"))
    assert (inbound._stream_made, inbound._acknowledged) == ("2026-12-06T10:00:00Z", 12)
