"""`JoinWatch` reads aiokafka's private state (it has no public "joining"); a consumer whose
private state is not what it expects (another aiokafka version) makes the message less precise,
never the watch fail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus.kafka.join_watch import GroupJoinStuck, JoinWatch


class SilentConsumer:
    """A consumer with none of aiokafka's private attributes, whose fetch never answers."""

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        await asyncio.sleep(3600)
        return {}


class Rejoining(SilentConsumer):
    """Its private state says it is subscribed and must join again, as aiokafka's does mid-join."""

    class _Subscription:
        subscription = object()

    class _Coordinator:
        coordinator_id = 7

        @staticmethod
        def need_rejoin(subscription: object) -> bool:
            return True

    _subscription = _Subscription()
    _coordinator = _Coordinator()


async def test_a_consumer_without_the_private_state_is_watched_all_the_same() -> None:
    watch = JoinWatch(SilentConsumer(), "g1", within_s=0.1)
    assert watch.joining() is False
    with pytest.raises(GroupJoinStuck, match=r"consumer group g1 has not answered a fetch in 0 s .*coordinator: unknown"):
        await watch.getmany(timeout_ms=50, max_records=10)


async def test_a_consumer_stuck_in_a_join_is_said_with_its_coordinator() -> None:
    watch = JoinWatch(Rejoining(), "g2", within_s=0.1)
    assert watch.joining() is True
    with pytest.raises(GroupJoinStuck, match=r"consumer group g2 has not completed a join .*coordinator: 7"):
        await watch.getmany(timeout_ms=50, max_records=10)
