"""Test support: write to and read from Safar topics on the real Kafka, rewind a group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka import make_consumer
from shared.settings import Settings
from shared.topics import Topics


async def produce_history(
    producer: AIOKafkaProducer, settings: Settings, values: Sequence[bytes]
) -> None:
    """Records keyed by customer, as the orchestrator produces them; waits for every ack."""
    topic = Topics(settings.namespace).history
    futures = [
        await producer.send(topic, value, key=orjson.loads(value)["customer_id"].encode())
        for value in values
    ]
    await asyncio.gather(*futures)


async def read_topic_records(
    settings: Settings, topic: str, count: int, timeout: float = 20
) -> list[tuple[bytes | None, bytes]]:
    """The first ``count`` (key, value) pairs of a topic, without a consumer group."""
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        while not partitions:
            await asyncio.sleep(0.05)
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: {len(records)} of {count} records in {timeout}s")
            batch = await consumer.getmany(timeout_ms=200)
            records += [(r.key, r.value or b"") for rs in batch.values() for r in rs]
        return records
    finally:
        await consumer.stop()


async def read_topic(
    settings: Settings, topic: str, count: int, timeout: float = 20
) -> list[bytes]:
    """The first ``count`` values of a topic (all partitions), without a consumer group."""
    return [value for _, value in await read_topic_records(settings, topic, count, timeout)]


async def rewind_group(settings: Settings, group: str, timeout: float = 30) -> None:
    """What an operator's offset reset does: the group will consume safar.history again."""
    consumer: AIOKafkaConsumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        consumer.subscribe([Topics(settings.namespace).history])
        expected = settings.history_partitions
        deadline = time.monotonic() + timeout
        while len(consumer.assignment()) < expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {consumer.assignment()} assigned in {timeout}s")
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: 0 for tp in consumer.assignment()})
    finally:
        await consumer.stop()
