"""What a process does when the lease group moves a source to it or away from it
(bus.app.leased_inbound), driven through the lease's own assignment handling: a process that
took over says so; one that lost the source (cut off from Kafka while another took over) stops
reading it at once and says why."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import ValidationError

from bus.adapter_api import AdapterConfig, Context, Inbound
from bus.app.leased_inbound import LeasedInbound
from bus.app.setup import BackgroundStarts
from bus.config.models import KafkaConfig, LeasesConfig
from bus.kafka.lease import LeaseOutOfTouch
from bus.runtime.supervisor import Supervisor

TOPIC = "p._leases"


class Source(Inbound[AdapterConfig]):
    Config: ClassVar[type[AdapterConfig]] = AdapterConfig
    one_reader: ClassVar[bool] = True

    def __init__(self, config: AdapterConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self.reading = False
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        self.reading = True

    async def stop(self) -> None:
        self.reading = False


class _Consumer:
    """What the lease asks of aiokafka's consumer when it is given the partition."""

    def pause(self, *partitions: Any) -> None:
        pass

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        await asyncio.Event().wait()  # the lease's partition is paused: nothing ever comes
        return {}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def given(leased: LeasedInbound, held: bool) -> None:
    lease = leased._lease
    await lease._assigned(_Consumer(), {TopicPartition(TOPIC, 0)} if held else set())  # type: ignore[arg-type]
    if lease._changing is not None:
        await lease._changing  # acted on in a task of its own


def leased_source(name: str, leases: LeasesConfig | None = None) -> LeasedInbound:
    config = AdapterConfig(type="source", name=name)
    inner = Source(config, Context(name=name, logger=logging.getLogger(f"adapters.source.{name}")))
    return LeasedInbound(
        inner,
        kafka=KafkaConfig(bootstrap="127.0.0.1:9"),
        bootstrap="127.0.0.1:9",
        topic=TOPIC,
        group=f"p-lease-{name}",
        starts=BackgroundStarts(),
        supervisor=Supervisor(),
        leases=leases,
    )


@pytest.fixture
def leased() -> LeasedInbound:
    return leased_source("unit-lease")


async def test_a_standby_that_is_given_the_source_takes_over_and_says_so(leased: LeasedInbound, caplog: pytest.LogCaptureFixture) -> None:
    inner = leased.inner
    assert isinstance(inner, Source)
    assert not (await leased.health()).ok  # the group has not answered yet
    gained = sample("bus_inbound_lease_changes_total", adapter="unit-lease", change="gained")
    await given(leased, False)
    assert leased.standing_by and not inner.reading and (await leased.health()).ok
    assert leased.progress() == {} and sample("bus_inbound_lease", adapter="unit-lease") == 0
    caplog.set_level(logging.INFO)
    await given(leased, True)
    assert inner.reading and not leased.standing_by and sample("bus_inbound_lease", adapter="unit-lease") == 1
    assert sample("bus_inbound_lease_changes_total", adapter="unit-lease", change="gained") == gained + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("this process takes over reading the source" in w for w in warnings), warnings
    await given(leased, True)  # a rebalance that leaves it here: nothing stops or starts again
    assert inner.starts == 1


async def test_a_reader_that_lost_the_source_stops_reading_at_once(leased: LeasedInbound, caplog: pytest.LogCaptureFixture) -> None:
    inner = leased.inner
    assert isinstance(inner, Source)
    caplog.set_level(logging.INFO)
    await given(leased, True)
    assert inner.reading and [r.levelno for r in caplog.records if "reads the source" in r.getMessage()] == [logging.INFO]
    lost = sample("bus_inbound_lease_changes_total", adapter="unit-lease", change="lost")
    await given(leased, False)
    assert not inner.reading and leased.standing_by and sample("bus_inbound_lease", adapter="unit-lease") == 0
    assert sample("bus_inbound_lease_changes_total", adapter="unit-lease", change="lost") == lost + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("another hub process took the source's lease" in w for w in warnings), warnings


async def test_a_slow_start_does_not_hold_up_the_group_and_changes_are_acted_on_in_order(leased: LeasedInbound) -> None:
    """aiokafka sends no heartbeat while its rebalance listener runs: a source's start inside it
    (a connect that times out) outlasted the session, and the group counted the holder out."""
    inner = leased.inner
    assert isinstance(inner, Source)
    gate = asyncio.Event()
    started = inner.start

    async def slow_start() -> None:
        await gate.wait()
        await started()

    inner.start = slow_start  # type: ignore[method-assign]
    lease = leased._lease
    await asyncio.wait_for(lease._assigned(_Consumer(), {TopicPartition(TOPIC, 0)}), 1)  # type: ignore[arg-type]
    await asyncio.wait_for(lease._assigned(_Consumer(), set()), 1)  # type: ignore[arg-type]
    assert not lease.answered.is_set() and not inner.reading, "the start is still in progress"
    gate.set()
    assert lease._changing is not None
    await lease._changing
    assert inner.starts == 1 and not inner.reading and leased.standing_by, "the gain, then the loss"

    gate.clear()
    await lease._assigned(_Consumer(), {TopicPartition(TOPIC, 0)})  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    await leased.stop()  # the process stops while the gain is being acted on
    gate.set()
    await asyncio.sleep(0.05)
    assert not inner.reading and inner.starts == 1, "a gain not acted on before the stop never starts the source"


async def test_a_holder_out_of_touch_stops_reading_and_its_old_membership_is_not_given_the_source_again(
    leased: LeasedInbound, caplog: pytest.LogCaptureFixture
) -> None:
    inner = leased.inner
    assert isinstance(inner, Source)
    lease = leased._lease
    await given(leased, True)
    assert inner.reading
    lease._consumer = _Consumer()  # type: ignore[assignment]
    lease._contact -= 3600  # nothing from the coordinator for an hour
    with pytest.raises(LeaseOutOfTouch, match="nothing from Kafka's group coordinator has confirmed"):
        await leased._keep()  # the fence, beside getmany
    assert not inner.reading and lease.held is None and not leased.standing_by
    assert "stopping its reading here" in caplog.text
    await given(leased, True)  # Kafka answers the old membership before the supervisor replaces it
    assert not inner.reading and inner.starts == 1, "no fence would watch it: the new membership decides"


async def test_a_paused_source_is_not_read_where_its_lease_is_and_a_resume_reads_it(leased: LeasedInbound) -> None:
    inner = leased.inner
    assert isinstance(inner, Source)
    await leased.pause("admin")  # before the group answers: a process started while the source is paused
    await given(leased, True)
    assert not inner.reading and not leased.standing_by, "the lease is held, the source not read"
    health = await leased.health()
    assert health.ok and health.detail == "paused by admin"
    await leased.resume()
    assert inner.reading and inner.starts == 1
    await leased.pause("ops")
    assert not inner.reading and not leased.standing_by and leased.paused_by == "ops"
    assert sample("bus_inbound_lease", adapter="unit-lease") == 1, "still the holder: no standby takes it over"
    await leased.resume()
    assert inner.reading and inner.starts == 2


def test_the_hand_over_time_is_config_and_can_be_switched_off() -> None:
    assert LeasesConfig().hand_over_after == timedelta(seconds=60)
    assert LeasesConfig.model_validate({"hand_over_after": None}).hand_over_after is None
    with pytest.raises(ValidationError, match="hand_over_after must be at least 1s"):
        LeasesConfig.model_validate({"hand_over_after": "500ms"})


async def test_a_source_that_is_never_handed_over_is_not_watched() -> None:
    leased = leased_source("unit-lease-kept", LeasesConfig.model_validate({"hand_over_after": None}))
    inner = leased.inner
    assert isinstance(inner, Source)
    await given(leased, True)
    assert inner.reading and leased._watcher is None
    await given(leased, False)
