"""``safar.history`` and ``safar.events`` (the event archive) -> PostgreSQL, in batches,
idempotently.

Each batch is decoded, written in one transaction (``INSERT ... ON CONFLICT DO NOTHING``
on the records' ids), and only then are its offsets committed: a crash replays records
that then insert nothing. A record that breaks the contract goes to ``safar.dlq``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import metrics
from services.api.db.base import sqlstate
from services.api.history.records import (
    HistoryRecord,
    RecordDecodeError,
    archived_event,
    decode_record,
)
from services.api.history.service import BatchResult, Received, record_batch
from shared.dead_letters import dead_letter
from shared.kafka import make_consumer, stop_consumer
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0
_STOP_GRACE_S = 10.0

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Partitions are handed over only after the batch in flight is stored and committed."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in revoked:
                metrics.RECORDER_LAG.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("recorder assigned partitions %s", sorted(tp.partition for tp in assigned))


class HistoryRecorder:
    """Consumes ``safar.history`` with the group ``<ns>.safar-recorder``.

    No I/O happens before :meth:`start`; :meth:`stop` may be called any number of times.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 1000,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._producer = producer
        self._batch_size = batch_size
        self._topics = Topics(settings.namespace)
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = make_consumer(
            self._settings,
            group_id=self._topics.group("recorder"),
            max_poll_interval_ms=300_000,
        )
        await consumer.start()
        self._consumer = consumer
        consumer.subscribe(
            [self._topics.history, self._topics.events],
            listener=_FinishBatchBeforeRevoke(self._lock),
        )
        self._task = asyncio.create_task(self._run(consumer), name="history-recorder")
        self._task.add_done_callback(self._on_done)
        metrics.RECORDER_RUNNING.set(1)

    async def stop(self) -> None:
        """Let the batch in flight finish (briefly), then leave the group."""
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(self._lock.acquire(), _STOP_GRACE_S)
            except TimeoutError:
                log.warning(
                    "recorder batch still running after %.0fs; abandoning it", _STOP_GRACE_S
                )
                task.cancel()
            else:
                task.cancel()
                self._lock.release()
            # Its outcome (cancelled, or a failure already logged) is not ours to raise.
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
        metrics.RECORDER_RUNNING.set(0)

    async def __aenter__(self) -> HistoryRecorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        metrics.RECORDER_RUNNING.set(0)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.critical("history recorder stopped: %r", failure, exc_info=failure)

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=self._batch_size)
            if batch:
                async with self._lock:
                    started = time.perf_counter()
                    await self.handle(batch)
                    await self._commit(consumer, batch)
                    metrics.RECORDER_BATCH_SECONDS.observe(time.perf_counter() - started)
            await self._observe_lag(consumer)

    async def handle(self, batch: Batch) -> BatchResult:
        """Decode and store one batch; retriable failures are retried, never skipped."""
        received: list[Received] = []
        for records in batch.values():
            for record in records:
                try:
                    if record.topic == self._topics.events:
                        decoded: HistoryRecord = archived_event(record.value)
                    else:
                        decoded = decode_record(record.value)
                except RecordDecodeError as exc:
                    if record.topic == self._topics.events:
                        # The orchestrator dead-letters the events it cannot read.
                        log.info(
                            "not archiving %s/%d@%d: %s",
                            record.topic,
                            record.partition,
                            record.offset,
                            exc,
                        )
                        continue
                    await self._dead_letter(record, str(exc))
                    continue
                received.append(Received(decoded, _produced_at(record, decoded.at)))
        result = await self._store(received)
        for outcome, counts in (
            ("inserted", result.inserted),
            ("duplicate", result.duplicate),
            ("erased", result.erased),
        ):
            for kind, count in counts.items():
                if count:
                    metrics.RECORDER_RECORDS.labels(kind, outcome).inc(count)
        return result

    async def _store(self, received: list[Received]) -> BatchResult:
        delay = 0.1
        while True:
            try:
                try:
                    return await self._write(received)
                except DBAPIError as exc:
                    if not refused(exc):
                        raise
                    log.warning("PostgreSQL refused a batch (%s); storing one by one", _reason(exc))
                    return await self._store_one_by_one(received)
            except (DBAPIError, KafkaError, OSError) as exc:
                metrics.RECORDER_RETRIES.inc()
                log.warning("storing history failed (%s); retry in %.1fs", _reason(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _write(self, received: list[Received]) -> BatchResult:
        async with self._sessions() as session, session.begin():
            return await record_batch(session=session, received=received)

    async def _store_one_by_one(self, received: list[Received]) -> BatchResult:
        """Isolate the records PostgreSQL refuses (e.g. a NUL byte): they are dead-lettered."""
        total = BatchResult()
        for item in received:
            try:
                result = await self._write([item])
            except DBAPIError as exc:
                if not refused(exc):
                    raise
                await self._dead_letter_value(
                    item.record.customer_id.encode(),
                    item.record.model_dump_json(by_alias=True).encode(),
                    f"refused by PostgreSQL: {_reason(exc)}",
                    kind=item.record.kind,
                )
                continue
            for mine, theirs in (
                (total.inserted, result.inserted),
                (total.duplicate, result.duplicate),
                (total.erased, result.erased),
            ):
                mine.update(theirs)
        return total

    async def _commit(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved in a rebalance; the new owner replays these records,
            # which then insert nothing.
            log.warning("recorder commit refused after rebalance: %s", exc)
        except KafkaError as exc:
            # The next batch's commit covers these offsets; a replay meanwhile is harmless.
            log.warning("recorder commit failed (%s); the next batch commits it", exc)

    async def _observe_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            metrics.RECORDER_LAG.labels(tp.topic, str(tp.partition)).set(
                max(highwater - position, 0)
            )

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        log.warning(
            "history record %s/%d@%d is not valid: %s",
            record.topic,
            record.partition,
            record.offset,
            error,
        )
        await self._dead_letter_value(
            record.key,
            record.value or b"",
            error,
            source=f"{record.topic}/{record.partition}@{record.offset}",
        )

    async def _dead_letter_value(
        self,
        key: bytes | None,
        value: bytes,
        error: str,
        *,
        source: str = "recorder",
        kind: str = "unknown",
    ) -> None:
        delay = 0.1
        while True:
            try:
                await dead_letter(
                    self._producer,
                    self._topics.dlq,
                    kind="history",
                    key=key,
                    value=value,
                    error=error,
                    source=source,
                )
                break
            except (KafkaError, OSError) as exc:
                log.warning("dead-lettering failed (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
        metrics.DLQ.labels(kind="history").inc()
        metrics.RECORDER_RECORDS.labels(kind, "invalid").inc()


def refused(exc: DBAPIError) -> bool:
    """PostgreSQL refused the data itself (SQLSTATE classes 22 and 23): retrying the same
    rows fails again, unlike a lost connection or a server restart."""
    return isinstance(exc, DataError | IntegrityError) or sqlstate(exc)[:2] in {"22", "23"}


def _reason(exc: Exception) -> str:
    """The driver's message, without the SQL statement and its parameters."""
    return str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)


def _produced_at(record: ConsumerRecord[bytes, bytes], fallback: datetime) -> datetime:
    """The Kafka timestamp (producer clock); the record's own time when there is none."""
    if record.timestamp is None or record.timestamp < 0:
        return fallback
    try:
        return datetime.fromtimestamp(record.timestamp / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # past year 9999
        return fallback
