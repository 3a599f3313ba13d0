"""The hub's murmur2 (bus/kafka/partitioner.py) gives the Java client's hashes, so a key lands on
the partition every other Kafka producer would put it on."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from bus.kafka.partitioner import murmur2, partition_of, partitioner

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints).
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "signed"), JAVA.items())
def test_the_java_clients_test_vectors(key: bytes, signed: int) -> None:
    assert murmur2(key) == signed & 0xFFFFFFFF


def test_the_same_hash_as_aiokafka_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(80) for _ in range(25)]
    keys += [b"\xff" * n for n in range(12)] + ["clé-€-😀".encode()]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]


def test_the_same_partition_as_aiokafkas_default_partitioner() -> None:
    rng = random.Random(11)
    theirs = DefaultPartitioner()
    for count in (1, 3, 4, 12, 50):
        partitions = list(range(count))
        for _ in range(200):
            key = f"customer-{rng.randrange(10**9)}".encode()
            expected = theirs(key, partitions, partitions)
            assert partition_of(key, partitions) == partitioner(key, partitions, partitions) == expected


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {partitioner(None, [0, 1], []) for _ in range(50)} <= {0, 1}  # none known available: any
