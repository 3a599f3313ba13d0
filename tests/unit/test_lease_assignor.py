"""The lease group's assignment (bus.kafka.lease): one holder, sticky to the one that holds it."""

from __future__ import annotations

import time

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from bus.kafka.lease import LeaseAssignor, choose_holder


class _Cluster:
    """What the assignor reads of aiokafka's ClusterMetadata: a topic's partitions."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._partitions.get(topic)


def claim(epoch: int, topic: str = "p._leases", *, unable: bool = False) -> ConsumerProtocolMemberMetadata:
    return ConsumerProtocolMemberMetadata(0, [topic], epoch.to_bytes(8, "big") + bytes([unable]))


def test_the_holder_keeps_the_lease_whoever_joins() -> None:
    assert choose_holder({"m-b": (3, False), "m-a": (0, False), "m-0": (0, False)}, new_epoch=9) == ("m-b", 3)
    assert choose_holder({"m-z": (1, False), "m-a": (0, False)}, new_epoch=9) == ("m-z", 1)


def test_with_no_holder_the_first_member_takes_it_at_a_new_epoch() -> None:
    assert choose_holder({"m-c": (0, False), "m-a": (0, False), "m-b": (0, False)}, new_epoch=9) == ("m-a", 9)


def test_two_claims_after_a_cut_off_holder_came_back_the_later_keeps_it() -> None:
    assert choose_holder({"m-old": (2, False), "m-new": (5, False)}, new_epoch=9) == ("m-new", 5)
    assert choose_holder({"m-b": (2, False), "m-a": (2, False)}, new_epoch=9) == ("m-a", 2)  # equal claims: one, the same in every leader


def test_a_holder_that_cannot_read_the_source_gives_it_to_one_that_may() -> None:
    assert choose_holder({"m-a": (5, True), "m-b": (0, False), "m-c": (0, False)}, new_epoch=9) == ("m-b", 9)
    # Every member could not read it lately (the source is down for all): it stays where it is.
    assert choose_holder({"m-a": (5, True), "m-b": (0, True)}, new_epoch=9) == ("m-a", 5)
    assert choose_holder({"m-a": (0, True), "m-b": (0, True)}, new_epoch=9) == ("m-a", 9)
    answer = LeaseAssignor().assign(_Cluster({"p._leases": {0}}), {"m-a": claim(5, unable=True), "m-b": claim(0)})
    assert answer["m-b"].assignment and not answer["m-a"].assignment
    member = LeaseAssignor()
    member.unable = True
    assert member.metadata(["p._leases"]).user_data[8] == 1  # said at the next join


def test_a_holder_chosen_by_a_leader_that_never_knew_the_first_has_the_later_epoch() -> None:
    """A holds the lease and is cut off; B, alone in the group, is given it by itself as leader;
    A comes back: B's epoch is the later one, whoever leads the join that follows."""
    first = LeaseAssignor().assign(_Cluster({"p._leases": {0}}), {"a": claim(0), "b": claim(0)})
    a_epoch = LeaseAssignor()
    a_epoch.on_assignment(first["a"])
    time.sleep(0.01)  # A's session times out: seconds pass, at the least milliseconds
    alone = LeaseAssignor().assign(_Cluster({"p._leases": {0}}), {"b": claim(0)})
    b_epoch = LeaseAssignor()
    b_epoch.on_assignment(alone["b"])
    assert b_epoch.epoch > a_epoch.epoch > 0
    back = LeaseAssignor().assign(_Cluster({"p._leases": {0}}), {"a": claim(a_epoch.epoch), "b": claim(b_epoch.epoch)})
    assert back["b"].assignment and not back["a"].assignment


def test_assign_gives_the_one_partition_to_one_member_and_its_epoch_travels() -> None:
    leader, member = LeaseAssignor(), LeaseAssignor()
    cluster = _Cluster({"p._leases": {0}})
    answer = leader.assign(cluster, {"m-1": claim(0), "m-2": claim(4), "m-3": claim(0)})
    held = {m for m, a in answer.items() if a.assignment}
    assert held == {"m-2"} and answer["m-2"].assignment == [("p._leases", [0])]
    member.on_assignment(answer["m-2"])
    assert member.epoch == 4 and member.metadata(["p._leases"]).user_data == (4).to_bytes(8, "big") + b"\x00"
    member.on_assignment(answer["m-1"])  # given nothing: it claims nothing at its next join
    assert member.epoch == 0


def test_a_topic_of_more_partitions_leases_its_first_only() -> None:
    answer = LeaseAssignor().assign(_Cluster({"p._leases": {2, 0, 1}}), {"m-1": claim(0), "m-2": claim(0)})
    assert answer["m-1"].assignment == [("p._leases", [0])] and not answer["m-2"].assignment
