"""Read back everything on ``safar.events``: ingest answers 200 only after the ack, so the
end offsets read right after a response already cover every accepted event."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.events import Event
from shared.kafka import make_consumer
from shared.settings import Settings
from shared.topics import Topics


@dataclass(frozen=True)
class Record:
    key: bytes | None
    event: Event


async def events_on_topic(settings: Settings, timeout: float = 15.0) -> list[Record]:
    """Every record of the namespace's events topic, from the beginning to the current end."""
    topic = Topics(settings.namespace).events
    # Without a group the consumer is assigned every partition of the topic by itself.
    consumer = make_consumer(settings, topic, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while not consumer.assignment():
                await asyncio.sleep(0.05)
            partitions = sorted(consumer.assignment())
            end = await consumer.end_offsets(partitions)
            records: list[Record] = []
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                batches = await consumer.getmany(*partitions, timeout_ms=200)
                for batch in batches.values():
                    records += [Record(r.key, Event.from_json(r.value or b"")) for r in batch]
            return records
    finally:
        await consumer.stop()


def by_message_id(records: list[Record]) -> dict[str, Record]:
    """Records by messageId; fails when one messageId arrived more than once."""
    found: dict[str, Record] = {}
    for record in records:
        assert record.event.message_id not in found, f"duplicate {record.event.message_id}"
        found[record.event.message_id] = record
    return found
