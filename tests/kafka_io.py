"""Test support for talking to the real Kafka: configuration, events, reading topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.actions import ActionRecord
from shared.config_feed import publish_snapshot
from shared.definitions import Bundle, ConfigSnapshot
from shared.events import Event, format_time
from shared.kafka import make_consumer, make_producer
from shared.settings import Settings
from shared.topics import Topics


async def publish_config(settings: Settings, bundle: dict[str, Any], version: int = 1) -> None:
    """What the api does on every change: one snapshot on safar.config."""
    snapshot = ConfigSnapshot(version=version, bundle=Bundle.model_validate(bundle))
    await publish_snapshot(settings, snapshot)


def event(
    customer: str,
    name: str,
    *,
    at: float | None = None,
    message_id: str | None = None,
    kind: str = "track",
    **properties: Any,
) -> Event:
    stamp = format_time(datetime.fromtimestamp(time.time() if at is None else at, UTC))
    return Event(
        message_id=message_id or str(uuid.uuid4()),
        type=kind,  # type: ignore[arg-type]
        customer_id=customer,
        user_id=customer,
        timestamp=stamp,
        received_at=format_time(datetime.now(UTC)),
        name=name,
        properties=properties,
    )


async def produce_events(settings: Settings, events: Sequence[Event]) -> None:
    """What ingest does: key by customer, wait for every ack."""
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = Topics(settings.namespace).events
        futures = [
            await producer.send(topic, e.to_json(), key=e.customer_id.encode()) for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a whole topic from the beginning, without a consumer group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self.values: list[bytes] = []

    async def __aenter__(self) -> TopicReader:
        self._consumer = make_consumer(self._settings, group_id=None)
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        if not partitions:
            await self._consumer.client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self) -> list[bytes]:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=100)
        for records in batch.values():
            self.values.extend(r.value or b"" for r in records)
        return self.values

    async def to_end(self, timeout: float = 30.0) -> list[bytes]:
        """Everything the topic holds now (up to its end offsets)."""
        assert self._consumer is not None
        partitions = sorted(self._consumer.assignment())
        end = await self._consumer.end_offsets(partitions)
        async with asyncio.timeout(timeout):
            while [tp for tp in partitions if await self._consumer.position(tp) < end[tp]]:
                await self.poll()
        return self.values

    async def until(
        self, done: Callable[[list[bytes]], bool], timeout: float = 30.0, what: str = "records"
    ) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while not done(await self.poll()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen in {timeout}s; have {len(self.values)}")
        return self.values


def actions(values: list[bytes]) -> list[ActionRecord]:
    return [ActionRecord.from_json(v) for v in values]
