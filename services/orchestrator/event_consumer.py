"""The events loop: safar.events -> profiles and stages in Redis -> safar.history.

Effects go first (history records acknowledged by Kafka, then the profile written with
compare-and-set), the offset commit last; a crash anywhere replays records that the
profile's offsets and message ids then recognise as already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from redis.exceptions import RedisError

from services.orchestrator import metrics
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.profile_store import ProfileStore
from shared.dead_letters import dead_letter
from shared.engine.compiled import CompiledConfig
from shared.engine.process import Outcome, process_event
from shared.engine.profile import parse_time
from shared.events import Event, EventDecodeError
from shared.history import encode_record, record_id
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class _Pending:
    event: Event
    record: ConsumerRecord[bytes, bytes]


@dataclass(slots=True)
class _CustomerResult:
    profile: Profile
    version: int
    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[tuple[_Pending, str]] = field(default_factory=list)


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Partitions are handed over only after the batch in flight is stored and committed."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            log.info("giving up partitions %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class EventConsumer:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: ProfileStore,
        config: ActiveConfig,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._config = config
        self._topics = Topics(settings.namespace)
        self._lock = asyncio.Lock()

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topics.events], listener=_FinishBatchBeforeRevoke(self._lock)
        )

    async def run(self) -> None:
        """Consume forever; I/O failures are retried with backoff, never skipped."""
        while True:
            batch = await self._consumer.getmany(
                timeout_ms=200, max_records=self._settings.orchestrator_batch_size
            )
            if not batch:
                continue
            config = self._config.current
            assert config is not None, "the consumer starts only once a configuration is active"
            async with self._lock:
                await self._retry(batch, config)
                await self._commit(batch)
            self._observe_lag(batch)

    async def _retry(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        config: CompiledConfig,
    ) -> None:
        delay = 0.1
        while True:
            try:
                await self.handle(batch, config)
                return
            except (RedisError, KafkaError, OSError) as exc:
                log.warning("batch failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _commit(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved during a rebalance; the new owner replays the records and
            # the profiles' offsets make that replay a no-op.
            log.warning("commit refused after rebalance: %s", exc)

    async def handle(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        config: CompiledConfig,
    ) -> None:
        """Apply one batch: decode, group by customer, process, publish, store."""
        now = datetime.now(UTC)
        by_customer: dict[str, list[_Pending]] = {}
        for records in batch.values():
            for record in records:
                try:
                    event = Event.from_json(record.value or b"")
                except EventDecodeError as exc:
                    await self._dead_letter(record, str(exc))
                    continue
                by_customer.setdefault(event.customer_id, []).append(_Pending(event, record))

        pending = list(by_customer)
        while pending:
            stored = await self._store.load_many(pending)
            results = [
                self._process_customer(
                    cid, stored[cid].profile, stored[cid].version, by_customer[cid], config, now
                )
                for cid in pending
            ]
            await self._publish(results)
            changed = [r for r in results if any(o.applied for o in r.outcomes)]
            saved = await self._store.save_many([(r.profile, r.version) for r in changed])
            lost = {r.profile.id for r, ok in zip(changed, saved, strict=True) if not ok}
            for result in results:
                if result.profile.id not in lost:
                    self._count(result, now)
            if lost:
                log.info("%d profiles changed under us; reprocessing them", len(lost))
            pending = sorted(lost)

    def _process_customer(
        self,
        customer_id: str,
        profile: Profile | None,
        version: int,
        items: list[_Pending],
        config: CompiledConfig,
        now: datetime,
    ) -> _CustomerResult:
        result = _CustomerResult(profile or Profile(id=customer_id), version)
        for item in items:
            try:
                outcome = process_event(
                    result.profile,
                    item.event,
                    config,
                    now,
                    partition=item.record.partition,
                    offset=item.record.offset,
                    dedupe_window=self._settings.dedupe_window,
                )
            except Exception as exc:
                # would fail the same way, so the event is dead-lettered and the stream goes on.
                log.exception("event %s failed in the engine", item.event.message_id)
                result.dead.append((item, f"{type(exc).__name__}: {exc}"))
                continue
            result.profile = outcome.profile
            result.outcomes.append(outcome)
        return result

    async def _publish(self, results: list[_CustomerResult]) -> None:
        """History records and dead letters, acknowledged before the profiles are written."""
        sends: list[Awaitable[object]] = []
        topic = self._topics.history
        for result in results:
            key = result.profile.id.encode()
            for outcome in result.outcomes:
                for move in outcome.transitions:
                    value = encode_record(
                        "transition",
                        record_id(
                            "transition", result.profile.id, move.journey, outcome.event.message_id
                        ),
                        result.profile.id,
                        journey=move.journey,
                        from_stage=move.from_stage,
                        to_stage=move.to_stage,
                        move=move.kind,
                        at=move.at,
                        event_id=outcome.event.message_id,
                    )
                    sends.append(await self._producer.send(topic, value, key=key))
            for item, error in result.dead:
                sends.append(self._dead_letter(item.record, error))
        if sends:
            await asyncio.gather(*sends)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        await dead_letter(
            self._producer,
            self._topics.dlq,
            kind="event",
            key=record.key,
            value=record.value or b"",
            error=error,
            source=f"{record.topic}/{record.partition}@{record.offset}",
        )
        metrics.DLQ.labels(kind="event").inc()
        metrics.EVENTS_PROCESSED.labels(outcome="dead_lettered").inc()

    def _count(self, result: _CustomerResult, now: datetime) -> None:
        for outcome in result.outcomes:
            if not outcome.applied:
                metrics.EVENTS_PROCESSED.labels(outcome="duplicate").inc()
                continue
            metrics.EVENTS_PROCESSED.labels(outcome="applied").inc()
            lag = (now - parse_time(outcome.event.received_at)).total_seconds()
            metrics.EVENT_LAG.observe(max(lag, 0.0))
            for move in outcome.transitions:
                metrics.STAGE_TRANSITIONS.labels(
                    move.journey, move.from_stage or "", move.to_stage
                ).inc()
                metrics.CUSTOMERS_IN_STAGE.labels(move.journey, move.to_stage).inc()
                if move.from_stage:
                    metrics.CUSTOMERS_IN_STAGE.labels(move.journey, move.from_stage).dec()

    def _observe_lag(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp in batch:
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                position = batch[tp][-1].offset + 1
                metrics.CONSUMER_LAG.labels(partition=str(tp.partition)).set(
                    max(highwater - position, 0)
                )
