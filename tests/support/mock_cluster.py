"""A three-broker Kafka cluster for fault tests: librdkafka's mock cluster, through ctypes.

The librdkafka shared library inside the ``confluent-kafka`` wheel carries the mock cluster that
librdkafka's own test suite uses: N brokers on real loopback ports speaking the Kafka protocol,
with calls that move partition leaders, take brokers down, answer chosen requests with an error
and slow a broker down. The hub's aiokafka clients talk to it like to any cluster.

It is a test double of a cluster, not a Kafka: what it models and what it does not is written
down in docs/embedded-broker.md ("The multi-broker mock cluster"). In short, it has no
CreateTopics (topics are made here, with ``create_topics``), no replication (one log per
partition whatever the replication factor; ``leader`` moves which broker serves it), no leader
election (a broker set down keeps its partitions until the test moves them, as a cluster's
controller would), no compaction, retention or transactions, and no authentication.
"""

from __future__ import annotations

__all__ = ["ApiKey", "ErrorCode", "MockCluster", "library_path"]

import asyncio
import ctypes
import enum
import glob
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bus.kafka.topics import TopicSpec


class ApiKey(enum.IntEnum):
    """Kafka protocol request kinds an error can be injected into."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    SYNC_GROUP = 14


class ErrorCode(enum.IntEnum):
    """Kafka protocol error codes (the numbers on the wire)."""

    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16


def library_path() -> str:
    """The librdkafka shipped in the confluent-kafka wheel (the mock is not in Debian's build)."""
    import confluent_kafka  # imported here: only the tests that use the mock need the wheel

    found = glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir, "confluent_kafka.libs", "librdkafka*.so*"))
    if not found:
        raise RuntimeError(f"no librdkafka beside {confluent_kafka.__file__}: a confluent-kafka wheel without its bundled library")
    return found[0]


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(library_path())
    p, i32, i16, i, sz, s = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int16, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
    signatures: dict[str, tuple[list[Any], Any]] = {
        "rd_kafka_conf_new": ([], p),
        "rd_kafka_conf_set": ([p, s, s, s, sz], i),
        "rd_kafka_new": ([i, p, s, sz], p),
        "rd_kafka_destroy": ([p], None),
        "rd_kafka_mock_cluster_new": ([p, i], p),
        "rd_kafka_mock_cluster_destroy": ([p], None),
        "rd_kafka_mock_cluster_bootstraps": ([p], s),
        "rd_kafka_mock_set_controller_id": ([p, i32], None),
        "rd_kafka_mock_topic_create": ([p, s, i, i], i),
        "rd_kafka_mock_partition_set_leader": ([p, s, i32, i32], i),
        "rd_kafka_mock_broker_set_down": ([p, i32], i),
        "rd_kafka_mock_broker_set_up": ([p, i32], i),
        "rd_kafka_mock_broker_set_rtt": ([p, i32, i], i),
        "rd_kafka_mock_broker_error_stack_cnt": ([p, i32, i16, ctypes.POINTER(sz)], i),
        "rd_kafka_mock_push_request_errors_array": ([p, i16, sz, ctypes.POINTER(i)], None),
        "rd_kafka_mock_clear_request_errors": ([p, i16], None),
        "rd_kafka_mock_coordinator_set": ([p, s, s, i32], i),
        "rd_kafka_mock_partition_delete_records": ([p, s, i32, ctypes.c_int64], i),
    }
    for name, (args, result) in signatures.items():
        if not hasattr(lib, name):
            raise RuntimeError(f"{library_path()} has no {name}: the fault tests need confluent-kafka>=2.16 (pyproject.toml's dev extra)")
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    # Variadic (error, rtt) pairs: declared per call, ctypes passes them as C ints.
    lib.rd_kafka_mock_broker_push_request_error_rtts.restype = i
    return lib


class MockCluster:
    """``brokers`` mock brokers (ids 1..N) on loopback, living in this process's librdkafka threads.

    Every call here acts at once on the running brokers; none blocks the event loop for long.
    """

    def __init__(self, brokers: int = 3) -> None:
        self._lib = _load()
        self.broker_ids = list(range(1, brokers + 1))
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, len(errstr))
        # The mock needs a client handle to live in; this producer never sends anything.
        self._rk = self._lib.rd_kafka_new(0, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"librdkafka: {errstr.value.decode()}")
        self._mock = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mock:
            raise RuntimeError("librdkafka could not create its mock cluster")
        # Admin clients send CreateTopics and friends to the controller; the mock names none by default.
        self._lib.rd_kafka_mock_set_controller_id(self._mock, 1)
        self.bootstrap: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._mock).decode()
        self.partitions: dict[str, int] = {}
        self.leaders: dict[tuple[str, int], int] = {}

    def close(self) -> None:
        if self._mock:
            self._lib.rd_kafka_mock_cluster_destroy(self._mock)
            self._lib.rd_kafka_destroy(self._rk)
            self._mock = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, err: int, what: str) -> None:
        if err:
            raise RuntimeError(f"mock cluster: {what} failed with Kafka error {err}")

    def create_topics(self, specs: Iterable[TopicSpec], replication_factor: int = 3) -> None:
        """What a platform team (or Strimzi's KafkaTopic) does before the hub starts: the mock has no CreateTopics."""
        for spec in specs:
            self._ok(self._lib.rd_kafka_mock_topic_create(self._mock, spec.name.encode(), spec.partitions, replication_factor), spec.name)
            self.partitions[spec.name] = spec.partitions
            for partition in range(spec.partitions):  # the mock picks leaders at random: spread them known
                self.set_leader(spec.name, partition, self.broker_ids[partition % len(self.broker_ids)])

    def set_leader(self, topic: str, partition: int, broker: int) -> None:
        err = self._lib.rd_kafka_mock_partition_set_leader(self._mock, topic.encode(), partition, broker)
        self._ok(err, f"leader of {topic}/{partition}")
        self.leaders[(topic, partition)] = broker

    def move_leaders(self, *, shift: int = 1, away_from: int | None = None) -> int:
        """Move the leader of every partition of every topic: by ``shift`` brokers round the ring,
        or only off broker ``away_from`` (what a controller does when a broker is lost). Returns how
        many partitions moved."""
        moved = 0
        n = len(self.broker_ids)
        for (topic, partition), current in list(self.leaders.items()):
            if away_from is not None and current != away_from:
                continue
            self.set_leader(topic, partition, (current - 1 + shift) % n + 1)
            moved += 1
        return moved

    def set_coordinator(self, group: str, broker: int) -> None:
        """Make ``broker`` the coordinator of consumer group ``group`` (the mock never moves one by itself)."""
        self._ok(self._lib.rd_kafka_mock_coordinator_set(self._mock, b"group", group.encode(), broker), f"coordinator of {group}")

    def delete_records(self, topic: str, partition: int, before: int) -> None:
        """Remove the partition's records below offset ``before``, as a topic's retention does."""
        err = self._lib.rd_kafka_mock_partition_delete_records(self._mock, topic.encode(), partition, before)
        self._ok(err, f"records of {topic}/{partition} below {before}")

    def broker_down(self, broker: int) -> None:
        """Close the broker's connections and refuse new ones (its partitions keep it as leader)."""
        self._ok(self._lib.rd_kafka_mock_broker_set_down(self._mock, broker), f"broker {broker} down")

    def broker_up(self, broker: int) -> None:
        self._ok(self._lib.rd_kafka_mock_broker_set_up(self._mock, broker), f"broker {broker} up")

    def set_rtt(self, broker: int, rtt_ms: int) -> None:
        """Delay every answer of ``broker`` by ``rtt_ms`` (0 restores it): a slow broker."""
        self._ok(self._lib.rd_kafka_mock_broker_set_rtt(self._mock, broker, rtt_ms), f"rtt of broker {broker}")

    def inject(self, api: ApiKey, errors: Sequence[ErrorCode], *, brokers: Sequence[int] | None = None, rtt_ms: int = 0) -> None:
        """Answer the next ``len(errors)`` requests of kind ``api`` on each of ``brokers`` (all by
        default) with these errors, in order, each after ``rtt_ms``."""
        pairs: list[ctypes.c_int] = []
        for code in errors:
            pairs += [ctypes.c_int(int(code)), ctypes.c_int(rtt_ms)]
        for broker in brokers or self.broker_ids:
            self._ok(
                self._lib.rd_kafka_mock_broker_push_request_error_rtts(
                    ctypes.c_void_p(self._mock), ctypes.c_int32(broker), ctypes.c_int16(int(api)), ctypes.c_size_t(len(errors)), *pairs
                ),
                f"inject into {api.name} on broker {broker}",
            )

    def pending(self, api: ApiKey) -> dict[int, int]:
        """Injected errors not yet answered, per broker."""
        counts: dict[int, int] = {}
        for broker in self.broker_ids:
            n = ctypes.c_size_t(0)
            self._ok(self._lib.rd_kafka_mock_broker_error_stack_cnt(self._mock, broker, int(api), ctypes.byref(n)), "error stack")
            counts[broker] = n.value
        return counts

    def answered(self, api: ApiKey, injected_per_broker: int) -> int:
        """How many of the errors injected with ``inject`` (``injected_per_broker`` on every broker)
        real requests have been answered with so far."""
        return sum(injected_per_broker - left for left in self.pending(api).values())

    async def wait_answered(self, api: ApiKey, injected_per_broker: int, at_least: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (n := self.answered(api, injected_per_broker)) < at_least and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return n
