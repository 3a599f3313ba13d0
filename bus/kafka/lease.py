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
(``kafka.session_timeout_ms``).

A holder cut off from the group's coordinator (Kafka down, a network partition, a coordinator
lost while the partitions it publishes to are still reachable) learns nothing from the group
until it reaches it again, while the group gives the lease to another member once the holder's
session times out. So the holder fences itself: when nothing the coordinator answered has
confirmed its membership for ``_FENCE_SHARE`` of the session timeout, ``keep()`` raises
``LeaseOutOfTouch`` and the source is stopped here, before the coordinator could have counted
the session out (the session runs from the last heartbeat the coordinator received, which was
sent no earlier than the last one confirmed). Then the membership starts again, and the group
says who reads the source once this process reaches it.
"""

from __future__ import annotations

__all__ = ["Lease", "LeaseAssignor", "LeaseOutOfTouch"]

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import BusError, ComponentHalted, KafkaUnavailable
from bus.kafka.clients import make_consumer, stop_consumer
from bus.kafka.join_watch import JoinWatch

# How often a member calls getmany: often enough for aiokafka's max_poll_interval_ms (300 s), past
# which it would leave the group; each call costs a wake-up and nothing else.
_ASK_EVERY_MS = 30_000


log = logging.getLogger("bus.kafka.lease")

# Past this share of the session timeout without a confirmed exchange with the coordinator, a
# holder stops reading: the rest of the session (2 s of the default 10) is for its source's stop.
_FENCE_SHARE = 0.8

# The coordinator's requests that confirm a membership when answered without an error: Heartbeat,
# and JoinGroup and SyncGroup, which the coordinator holds while the group forms (an awaited join
# keeps the member in the group), so they count from when they were sent.
_HEARTBEAT, _JOIN_GROUP, _SYNC_GROUP = 12, 11, 14
_REBALANCE_IN_PROGRESS = 27  # a heartbeat's answer while the group forms: still a member


class LeaseOutOfTouch(ComponentHalted):
    """The lease's holder has heard nothing from the group's coordinator for too long to be sure it still holds it."""


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


def _held_up(held_up: float, silent: float) -> str:
    """What to add when the silence was this process's own: its event loop, held up (starved of
    CPU, or a call that blocks it), sent no heartbeat either, so the broker may count it out alike;
    the cause to look for is here, not in Kafka."""
    if held_up < max(0.5, silent / 4):
        return ""
    return (
        f"; this process's event loop was itself held up for {held_up:.1f} s meanwhile and sent no heartbeat then "
        "(starved of CPU, or a call that blocks the loop): look at the process's CPU limit and throttling first"
    )


class Lease:
    """Membership of one lease's group. ``on_change(held)`` is awaited, in a task of its own and
    in turn, each time this process gains or loses the lease (``held`` says which); ``held`` is
    None until the group first answered. Run ``keep()`` as a task for as long as the lease is
    wanted: it keeps the membership (a member that stops asking leaves the group), raises
    ``GroupJoinStuck`` when a join does not complete within ``kafka.join_timeout_s``, and
    ``LeaseOutOfTouch`` when the holder can no longer be sure it holds the lease."""

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
        self._fence_s = kafka.session_timeout_ms / 1000 * _FENCE_SHARE
        self._contact = time.monotonic()  # when the last exchange that confirmed the membership was sent
        self._joins_out: dict[int, float] = {}  # JoinGroup and SyncGroup requests awaited, by id: when sent
        self._changing: asyncio.Task[None] | None = None  # the on_change being told, after those before it
        # Set when the fence fired: this membership, left until the supervisor's rejoin replaces
        # it, may be given the lease again when Kafka answers, with no fence watching: ignored.
        self._fenced = False

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
        self._contact = time.monotonic()
        self._joins_out.clear()
        self._fenced = False
        self._watch_coordinator(consumer)
        consumer.subscribe([self._topic], listener=_Listener(self, consumer))
        self._consumer = consumer

    def _watch_coordinator(self, consumer: AIOKafkaConsumer) -> None:
        """Note each exchange with the group's coordinator that confirms this membership.

        aiokafka says nothing of its heartbeats (and, cut off from the coordinator, waits for it
        without end, never counting its session out), so its private ``_send_req``, through which
        every request to the coordinator goes, is wrapped; tests/integration/test_leases.py fails
        if an upgrade moves it."""
        coordinator = getattr(consumer, "_coordinator", None)
        send = getattr(coordinator, "_send_req", None)
        if send is None:
            raise BusError(f"lease group {self.group}: this aiokafka has no GroupCoordinator._send_req to watch the lease by")

        async def sent(request: Any) -> Any:
            started = time.monotonic()
            kind = getattr(request, "API_KEY", None)
            awaited = kind in (_JOIN_GROUP, _SYNC_GROUP)
            if awaited:
                self._joins_out[id(request)] = started
            try:
                response = await send(request)
            finally:
                self._joins_out.pop(id(request), None)
            error = getattr(response, "error_code", None)
            if (error == 0 and kind in (_HEARTBEAT, _JOIN_GROUP, _SYNC_GROUP)) or (error == _REBALANCE_IN_PROGRESS and kind == _HEARTBEAT):
                self._contact = max(self._contact, started)
            return response

        coordinator._send_req = sent  # type: ignore[union-attr]  # present: _send_req was found on it

    def out_of_touch_s(self) -> float:
        """For how long nothing confirmed this membership (a join or sync awaited counts from when it was sent)."""
        latest = max((self._contact, *self._joins_out.values()))
        return time.monotonic() - latest

    async def keep(self) -> None:
        """Keep the membership; raises LeaseOutOfTouch when the holder cannot be sure it still holds the lease."""
        assert self._consumer is not None
        tasks = [asyncio.create_task(self._ask(self._consumer)), asyncio.create_task(self._fence())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    async def _ask(self, consumer: AIOKafkaConsumer) -> None:
        watch = JoinWatch(consumer, self.group, self._kafka.join_timeout_s)
        while True:  # the partition is paused: each call waits out its timeout (rebalances go on meanwhile)
            await watch.getmany(timeout_ms=_ASK_EVERY_MS, max_records=1)

    async def _fence(self) -> None:
        # Checked apart from getmany, which may wait out a join or a coordinator that cannot be found.
        step = self._fence_s / 8
        held_up = 0.0  # the longest this loop was held up since the last confirmed exchange
        contact = self._contact
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(step)
            if self._contact != contact:
                contact, held_up = self._contact, 0.0
            held_up = max(held_up, time.monotonic() - asleep - step)
            silent = self.out_of_touch_s()
            if self.held and silent > self._fence_s:
                self.held = None  # not known until the group answers again
                self._fenced = True
                await self.quiet()
                raise LeaseOutOfTouch(
                    f"lease group {self.group}: nothing from Kafka's group coordinator has confirmed this process's "
                    f"membership for {silent:.1f} s ({_FENCE_SHARE:.0%} of kafka.session_timeout_ms): another process may "
                    f"take the source over meanwhile, so it is not read here until the group answers again{_held_up(held_up, silent)}"
                )

    async def stop(self) -> None:
        """Leave the group: another member takes the lease at once. Call after the source stopped."""
        await self.quiet()
        consumer, self._consumer = self._consumer, None
        self.held = None
        self._assignor.epoch = 0
        if consumer is not None:
            await stop_consumer(consumer)

    async def quiet(self) -> None:
        """Drop the changes not yet told (the source is being stopped here): none starts it after this."""
        changing, self._changing = self._changing, None
        if changing is not None and not changing.done():
            changing.cancel()
            await asyncio.gather(changing, return_exceptions=True)

    async def _assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        if self._fenced:
            return
        mine = {tp for tp in assigned if tp.topic == self._topic}
        if mine:
            consumer.pause(*mine)  # nothing to read: the membership is the lease
        held = bool(mine)
        if held != self.held:
            self.held = held
            # Told in a task of its own: aiokafka sends no heartbeat until this listener returns,
            # and a source's start may take longer than the session (a connect that times out),
            # past which the group would count this member out and move the lease.
            self._changing = asyncio.create_task(self._tell(self._changing, held), name=f"lease-change:{self.group}")
        elif self._changing is None or self._changing.done():
            self.answered.set()

    async def _tell(self, before: asyncio.Task[None] | None, held: bool) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)  # in the order they came: a gain, then a loss
        try:
            await self._on_change(held)
        except Exception:  # a bug here must not pass unsaid; the group's answer stands
            log.exception("lease group %s: acting on %s the lease failed", self.group, "gaining" if held else "losing")
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
