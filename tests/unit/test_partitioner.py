"""Our producers' partitioner is Kafka's default one, with the key hash cached."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import key_partitioner, partition_for


def test_keys_land_where_kafkas_default_partitioner_puts_them() -> None:
    default = DefaultPartitioner()
    chance = random.Random(5)
    keys = [f"customer-{chance.randrange(10**9)}".encode() for _ in range(2_000)]
    keys += [b"", b"a", "ümlaut-ü".encode(), bytes(range(256))]
    for partitions in ([0], [0, 1, 2, 3], list(range(12)), [2, 5, 9]):
        for key in keys * 2:  # the second time from the cache
            expected = default(key, partitions, partitions)
            assert partition_for(key, partitions) == expected
            assert key_partitioner(key, partitions, partitions) == expected


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert key_partitioner(None, [0, 1, 2], [1]) == 1
