"""Follows ``safar.config`` and hands each newer snapshot to a callback (hot reload)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from shared.definitions import ConfigSnapshot
from shared.kafka import make_consumer, make_producer, stop_consumer
from shared.settings import Settings
from shared.tasks import cancel_and_wait
from shared.topics import Topics

log = logging.getLogger(__name__)


class ConfigFeed:
    """Reads the latest snapshot at start, then every new one, without a consumer group."""

    def __init__(self, settings: Settings, on_snapshot: Callable[[ConfigSnapshot], None]) -> None:
        self._settings = settings
        self._on_snapshot = on_snapshot
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.version = 0
        self.ready = asyncio.Event()

    async def start(self) -> None:
        topic = Topics(self._settings.namespace).config
        self._consumer = make_consumer(self._settings, group_id=None)
        await self._consumer.start()
        partition = TopicPartition(topic, 0)
        self._consumer.assign([partition])
        end = (await self._consumer.end_offsets([partition]))[partition]
        self._consumer.seek(partition, max(end - 1, 0))
        self._task = asyncio.create_task(self._follow(), name="config-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)

    async def __aenter__(self) -> ConfigFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:  # hot reload goes on once Kafka is back
                log.warning("reading the configuration topic failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    self._accept(record.value or b"")

    def _accept(self, raw: bytes) -> None:
        try:
            snapshot = ConfigSnapshot.model_validate_json(raw)
        except ValidationError as exc:
            log.error("ignoring an unreadable configuration snapshot: %s", exc)
            return
        if snapshot.version <= self.version:
            return
        try:
            self._on_snapshot(snapshot)
        except ValueError as exc:
            log.error("configuration version %d refused: %s", snapshot.version, exc)
            return
        except Exception:  # a bug compiling it must not end hot reload for later versions
            log.exception("configuration version %d could not be applied", snapshot.version)
            return
        self.version = snapshot.version
        self.ready.set()
        log.info("configuration version %d active", snapshot.version)


async def publish_snapshot(settings: Settings, snapshot: ConfigSnapshot) -> None:
    """Put one snapshot on ``safar.config`` with a short-lived producer (the api keeps its
    own producer; tools, benchmarks and tests use this)."""
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            Topics(settings.namespace).config, snapshot.to_json(), key=b"config"
        )
    finally:
        await producer.stop()
