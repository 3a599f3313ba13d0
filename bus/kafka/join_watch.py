"""A consumer group join that never completes is a failure, not a quiet wait.

aiokafka joins (and rejoins after a rebalance) in a background task of the consumer, and while a
join is in progress ``getmany`` waits for it to finish, whatever its ``timeout_ms``. A join that
never completes (seen once on the three-broker mock cluster: the coordinator lost while the
groups were still forming, then nothing delivered for 150 s although a new coordinator was up
after 3 s; see docs/embedded-broker.md) would stop the router or a subscriber inside getmany
with nothing said. ``JoinWatch.getmany`` bounds that wait by ``kafka.join_timeout_s`` and then
raises ``GroupJoinStuck``: the consume loop ends, and the supervisor logs it, counts it in
``bus_component_restarts_total``, reports it in /readyz and starts the component again with a new
consumer (new connections, a new coordinator lookup).

Whether a join is in progress is read from two attributes aiokafka does not publish (the
subscription and the coordinator's ``need_rejoin``), for the message only;
tests/faults/test_cluster_faults.py fails if an aiokafka upgrade changes the behaviour.
"""

from __future__ import annotations

__all__ = ["GroupJoinStuck", "JoinWatch"]

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bus.errors import ComponentHalted


class GroupJoinStuck(ComponentHalted):
    """The consumer group has needed a join for longer than kafka.join_timeout_s."""


class JoinWatch:
    def __init__(self, consumer: AIOKafkaConsumer, group: str, within_s: float) -> None:
        self._consumer = consumer
        self._group = group
        self._within_s = within_s

    def joining(self) -> bool:
        """True while the consumer is subscribed but has no current assignment from its group."""
        # aiokafka's private state (it has no public "joining"): read with defaults, so a change in
        # aiokafka makes the message less precise, never the watch fail.
        subscription = getattr(getattr(self._consumer, "_subscription", None), "subscription", None)
        coordinator = getattr(self._consumer, "_coordinator", None)
        if subscription is None or coordinator is None or not hasattr(coordinator, "need_rejoin"):
            return False  # not subscribed (or not started): nothing to join
        return bool(coordinator.need_rejoin(subscription))

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The consumer's getmany, which may wait out a join, for at most join_timeout_s longer than asked."""
        try:
            async with asyncio.timeout(self._within_s + timeout_ms / 1000):
                batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
                batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
                return batch
        except TimeoutError:
            coordinator = getattr(getattr(self._consumer, "_coordinator", None), "coordinator_id", None)
            what = "has not completed a join" if self.joining() else "has not answered a fetch"
            raise GroupJoinStuck(
                f"consumer group {self._group} {what} in {self._within_s:.0f} s (kafka.join_timeout_s; coordinator: "
                f"{coordinator if coordinator is not None else 'unknown'}); starting it again with a new consumer"
            ) from None
