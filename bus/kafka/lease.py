"""One holder at a time across every process of the hub: Kafka's group protocol as a lease.

Some sources must be read by one process at a time however many replicas run (a poller, which
would publish every record once per replica and spend the API's rate limit as many times; a
replication slot, which takes one reader; a drop folder on a shared volume; an MQTT session,
which the broker gives to the last client that connected with its id). Each process that could
read such a source joins the consumer group ``<prefix>-lease-<name>`` on the one-partition topic
``<prefix>._leases``; the member the group gives that partition holds the lease. Nothing is
written to the topic or read from it (the partition is paused): only the membership counts.

The assignment is sticky. Each member says in its JoinGroup metadata the epoch at which it took
the lease (0: it holds none), and the group's leader gives the partition to the member that
claims the highest, or, when none claims it, to one member at a new epoch (the leader's clock). So a process joining
or leaving does not move a lease another process holds (its source would stop and start for
nothing); a holder that stops leaves the group after its source stopped, and another member
takes the lease at once; a holder that dies keeps it until its session times out
(``kafka.session_timeout_ms``). A holder cut off from Kafka for longer than that may read on
while another has taken over, but it cannot publish what it reads (Kafka is what it lost), and
at its next join it learns that it lost the lease and stops.
"""

from __future__ import annotations

__all__ = ["Lease", "LeaseAssignor"]

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import KafkaUnavailable
from bus.kafka.clients import make_consumer, stop_consumer
from bus.kafka.join_watch import JoinWatch

# How often a member calls getmany: often enough for aiokafka's max_poll_interval_ms (300 s), past
# which it would leave the group; each call costs a wake-up and nothing else.
_ASK_EVERY_MS = 30_000


def _epoch(data: bytes | None) -> int:
    return int.from_bytes(data[:8], "big") if data and len(data) >= 8 else 0


def _claim(data: bytes | None) -> tuple[int, bool]:
    """A member's JoinGroup claim: the epoch it holds the lease at, and whether it cannot read the source."""
    return _epoch(data), bool(data and len(data) >= 9 and data[8])


class LeaseAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """The group's assignment of one lease: sticky to the member that holds it (see the module)."""

    name = "bus-lease"
    version = 0

    def __init__(self) -> None:
        self.epoch = 0  # the epoch at which this member holds the lease; 0: it holds none
        self.unable = False  # this member could not read the source lately: another should take it

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        claim = self.epoch.to_bytes(8, "big") + bytes([self.unable])
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), claim)

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({topic for meta in members.values() for topic in meta.subscription})
        leases = [(topic, min(cluster.partitions_for_topic(topic) or {0})) for topic in topics]
        answer = {member: ConsumerProtocolMemberAssignment(self.version, [], b"") for member in members}
        if not members or not leases:
            return answer
        claims = {member: _claim(meta.user_data) for member, meta in members.items()}
        newest = max(epoch for epoch, _ in claims.values())
        holder, epoch = choose_holder(claims, new_epoch=max(time.time_ns() // 1_000_000, newest + 1))
        answer[holder] = ConsumerProtocolMemberAssignment(
            self.version, [(topic, [partition]) for topic, partition in leases], epoch.to_bytes(8, "big")
        )
        return answer

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.epoch = _epoch(assignment.user_data) if assignment.assignment else 0


def choose_holder(claims: Mapping[str, tuple[int, bool]], *, new_epoch: int) -> tuple[str, int]:
    """The member that holds the lease and its epoch, from each member's claim: the epoch it holds
    it at (0: none) and whether it could not read the source lately. Among the members that could
    (all of them, when none could), the highest claim keeps it; with no claim, the first member
    by id takes it at ``new_epoch``. So a holder that cannot reach the source from where it runs
    gives it to one that may, and while the source is down for all it stays where it is.

    Epochs are the leader's clock in milliseconds when a holder was chosen, so a later holder has
    the higher one even when the leader that chose it never knew the earlier holder: two claim it
    only after one was cut off from Kafka while the other took over, and the later keeps it."""
    able = {member: epoch for member, (epoch, unable) in claims.items() if not unable}
    candidates = able or {member: epoch for member, (epoch, _) in claims.items()}
    member = max(sorted(candidates), key=lambda m: candidates[m])  # sorted: the first of equal claims
    if candidates[member]:
        return member, candidates[member]
    return min(candidates), new_epoch


class Lease:
    """Membership of one lease's group. ``on_change(held)`` is awaited each time this process
    gains or loses the lease (``held`` says which); ``held`` is None until the group first
    answered. Run ``keep()`` as a task for as long as the lease is wanted: it keeps the
    membership (a member that stops asking leaves the group) and raises ``GroupJoinStuck`` when
    a join does not complete within ``kafka.join_timeout_s``."""

    def __init__(
        self,
        kafka: KafkaConfig,
        bootstrap: str,
        *,
        topic: str,
        group: str,
        on_change: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.group = group
        self.held: bool | None = None
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._topic = topic
        self._on_change = on_change
        self._assignor = LeaseAssignor()
        self._consumer: AIOKafkaConsumer | None = None
        self.answered = asyncio.Event()  # set once the group first answered and on_change returned

    @property
    def epoch(self) -> int:
        return self._assignor.epoch

    @property
    def unable(self) -> bool:
        return bool(self._assignor.unable)

    def cannot_read(self, unable: bool) -> None:
        """Say at the next join whether this process could not read the source lately: such a
        member is given the lease only when no member could read it."""
        self._assignor.unable = unable

    async def start(self) -> None:
        """Join the group (in the background: ``held`` says when it answered). Raises KafkaUnavailable."""
        self._assignor.epoch = 0  # a new member holds nothing, whatever an earlier one held
        self.answered.clear()
        consumer = make_consumer(
            self._kafka, self._bootstrap, group_id=self.group, partition_assignment_strategy=(self._assignor,), max_poll_records=1
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await stop_consumer(consumer)
            raise KafkaUnavailable(f"lease group {self.group} cannot be joined: {exc!r}") from exc
        # Subscribed after the start, which would otherwise wait for the group's first answer
        # (half a session timeout on the embedded broker): the hub waits for every lease at once.
        consumer.subscribe([self._topic], listener=_Listener(self, consumer))
        self._consumer = consumer

    async def keep(self) -> None:
        assert self._consumer is not None
        watch = JoinWatch(self._consumer, self.group, self._kafka.join_timeout_s)
        while True:  # the partition is paused: each call waits out its timeout (rebalances go on meanwhile)
            await watch.getmany(timeout_ms=_ASK_EVERY_MS, max_records=1)

    async def stop(self) -> None:
        """Leave the group: another member takes the lease at once. Call after the source stopped."""
        consumer, self._consumer = self._consumer, None
        self.held = None
        self._assignor.epoch = 0
        if consumer is not None:
            await stop_consumer(consumer)

    async def _assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        mine = {tp for tp in assigned if tp.topic == self._topic}
        if mine:
            consumer.pause(*mine)  # nothing to read: the membership is the lease
        held = bool(mine)
        try:
            if held != self.held:
                self.held = held
                await self._on_change(held)
        finally:
            self.answered.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lease: Lease, consumer: AIOKafkaConsumer) -> None:
        self._lease = lease
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Nothing to do: a rebalance leaves the lease where it is (sticky), and a holder that is
        # not given it again learns so in on_partitions_assigned.
        await asyncio.sleep(0)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._lease._assigned(self._consumer, assigned)
