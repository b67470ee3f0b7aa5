"""Kafka clients built from settings, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (``acks=all``)."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.require("kafka_bootstrap"),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "client_id": "safar",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    """A consumer with manual commits; offsets move only after effects are durable."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.require("kafka_bootstrap"),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "safar",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(settings: Settings) -> None:
    """Create the Safar topics of the settings' namespace when missing."""
    topics = Topics(settings.namespace)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require("kafka_bootstrap"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, replication_factor=1)
            for name, partitions in topics.partitions(settings.events_partitions).items()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by another process")
            log.info("created topics %s", ", ".join(t.name for t in wanted))
    finally:
        await admin.close()


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer at shutdown; aiokafka surfaces the cancelled fetch of a broker that
    is already gone as CancelledError, which must not fail the shutdown."""
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()
