"""The events loop: safar.events -> profiles, stages, waits -> safar.actions/history.

Effects go first (actions and history records acknowledged by Kafka), then the profile is
written with compare-and-set and its new timers indexed, then the offset is committed. A
crash anywhere replays records that the profile's offsets and message ids recognise as
applied. An event that fails in the engine is dead-lettered, and its customer's other events
of the batch are applied again, without it, from the stored profile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from redis.exceptions import RedisError

from services.orchestrator import metrics
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.effects_publisher import EffectsPublisher, timer_entries
from services.orchestrator.events_progress import EventsProgress
from services.orchestrator.pacing import Every
from services.orchestrator.profile_cache import ProfileCache
from services.orchestrator.profile_store import ProfileStore, Stored
from services.orchestrator.wait_index import TimerEntry, WaitIndex
from shared.dead_letters import dead_letter
from shared.engine.compiled import CompiledConfig
from shared.engine.identity import merge_profiles
from shared.engine.process import Outcome, process_event
from shared.engine.profile import parse_time
from shared.events import Event, EventDecodeError, format_time
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0
# Records reach Kafka a few ms after ingest stamps their receivedAt, and concurrent requests
# may land in a partition slightly out of order: progress is reported this much earlier.
_READ_MARGIN_S = 0.05
# How often partitions read to their end are confirmed against the broker's end offsets.
_END_CHECK_S = 0.25
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@dataclass(slots=True)
class _Pending:
    event: Event
    record: ConsumerRecord[bytes, bytes]


@dataclass(slots=True)
class _CustomerResult:
    profile: Profile
    version: int
    timers_before: set[TimerEntry]
    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[tuple[_Pending, str]] = field(default_factory=list)
    merged: list[tuple[str, int]] = field(default_factory=list)  # (anonymous id, version)

    @property
    def changed(self) -> bool:
        return any(o.applied for o in self.outcomes) or bool(self.merged)


def merge_source(event: Event) -> str | None:
    """The anonymous id an identify/alias links to its userId, if any."""
    if event.user_id is None or event.type not in ("identify", "alias"):
        return None
    source = event.previous_id if event.type == "alias" else event.anonymous_id
    return source if source and source != event.user_id else None


def _gone(before: set[TimerEntry], profile: Profile) -> list[TimerEntry]:
    """Timer entries whose wait left the profile (compared by member, not due time)."""
    still = {e.member for e in timer_entries(profile)}
    return [e for e in before if e.member not in still]


def _without_dead(
    by_customer: dict[str, list[_Pending]], results: list[_CustomerResult]
) -> set[str]:
    """Take the events that failed in the engine out of their customers' lists; returns the
    customers whose other events are to be applied again, from the stored profile."""
    redo = set()
    for result in results:
        if result.dead:
            dead = {id(item) for item, _ in result.dead}
            left = [p for p in by_customer[result.profile.id] if id(p) not in dead]
            by_customer[result.profile.id] = left
            if left:
                redo.add(result.profile.id)
    return redo


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Partitions are handed over only after the batch in flight is stored and committed;
    the profiles cached for them are forgotten."""

    def __init__(
        self, lock: asyncio.Lock, settled: Callable[[], Awaitable[None]], cache: ProfileCache
    ) -> None:
        self._lock = lock
        self._settled = settled
        self._cache = cache

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            try:
                await self._settled()
            finally:
                log.info("giving up partitions %s", sorted(tp.partition for tp in revoked))
                self._cache.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class EventConsumer:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: ProfileStore,
        waits: WaitIndex,
        progress: EventsProgress,
        config: ActiveConfig,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._waits = waits
        self._progress = progress
        self._config = config
        self._topics = Topics(settings.namespace)
        self._lock = asyncio.Lock()
        self._cache = ProfileCache(settings.orchestrator_profile_cache)
        self._end_check = Every(_END_CHECK_S)
        # The newest batch's offset commit and progress mark, under way in the background.
        self._settling: asyncio.Task[None] | None = None
        # Offsets applied but not committed yet (commits are paced: kafka_commit_interval_s).
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_pace = Every(settings.kafka_commit_interval_s)
        self.records_done = 0  # records applied by this process

    @property
    def assigned(self) -> bool:
        """True once the consumer group has given this process partitions."""
        return bool(self._consumer.assignment())

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topics.events],
            listener=_FinishBatchBeforeRevoke(self._lock, self._settle_all, self._cache),
        )

    async def run(self) -> None:
        """Consume forever; I/O failures are retried with backoff, never skipped."""
        try:
            while True:
                batch = await self._gather()
                async with self._lock:
                    if batch:
                        config = self._config.current
                        assert config is not None, "consuming starts only once a config is on"
                        await self._retry(batch, config)
                        self.records_done += sum(len(records) for records in batch.values())
                        self._observe_lag(batch)
                    await self._settle(batch)
        finally:
            try:
                await self._settle_all()
            except Exception:  # the loop is ending anyway; the records are replayed
                log.warning("the last offset commit failed", exc_info=True)

    async def _settle(self, batch: Batch) -> None:
        """Commit the applied offsets (at most every ``kafka_commit_interval_s``) and mark the
        progress in the background: the next batch does not wait for those round trips. One
        at a time and in order, so neither overtakes an earlier one; an error surfaces on the
        next call (a batch later than it used to) and stops the loop as before."""
        await self._settled()
        positions = await self._applied_positions()
        self._settling = asyncio.create_task(
            self._commit_and_mark(batch, positions), name="events-settle"
        )

    async def _settle_all(self) -> None:
        """Before partitions are handed over or the loop ends: everything applied is
        committed, not only what the pace allowed, once the settle under way has ended (also
        when it failed: no offset of a revoked partition is left to be committed later).
        Like a settle, it goes on if the caller is cancelled."""
        self._settling = asyncio.create_task(
            self._commit_after(self._settling), name="events-commit-all"
        )
        await self._settled()

    async def _commit_after(self, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await previous
        finally:
            await self._commit()

    async def _settled(self) -> None:
        """Wait for the commit and mark under way, if any (its error is raised once). A
        cancelled caller leaves it running."""
        settling = self._settling
        if settling is None:
            return
        try:
            await asyncio.shield(settling)
        finally:
            if settling.done():
                self._settling = None

    async def _applied_positions(self) -> dict[TopicPartition, int]:
        """Every ``_END_CHECK_S``, the assigned partitions' positions, taken before the next
        fetch moves them past records not yet applied; else nothing."""
        if not self._end_check.due():
            return {}
        try:
            return {tp: await self._consumer.position(tp) for tp in self._consumer.assignment()}
        except (KafkaError, IllegalStateError) as exc:
            log.debug("positions unavailable (%s); progress from records only", exc)
            return {}

    async def _commit_and_mark(self, batch: Batch, positions: dict[TopicPartition, int]) -> None:
        for tp, records in batch.items():
            if records:
                self._to_commit[tp] = records[-1].offset + 1
        if self._commit_pace.due():
            await self._commit()
        await self._mark_progress(batch, positions)

    async def _mark_progress(self, batch: Batch, positions: dict[TopicPartition, int]) -> None:
        """Tell the timer loop how far each partition's received events are applied: up to
        the newest record applied, and, for a partition whose applied ``positions`` reach
        the end offsets asked for afterwards, up to the moment of asking. (Progress is
        advisory: failing to record it only delays waits, up to ``timer_hold_max_s``.)"""
        applied_until = {
            tp.partition: records[-1].timestamp / 1000 - _READ_MARGIN_S
            for tp, records in batch.items()
            if records
        }
        if positions:
            asked_at = time.time()
            try:
                ends = await self._consumer.end_offsets(sorted(positions))
                for tp, end in ends.items():
                    if positions[tp] >= end:
                        applied_until[tp.partition] = asked_at - _READ_MARGIN_S
            except KafkaError as exc:
                log.debug("end offsets unavailable (%s); progress from records only", exc)
        try:
            await self._progress.mark(applied_until)
        except RedisError as exc:
            log.warning("could not record the events loop's progress: %s", exc)

    async def _gather(self) -> Batch:
        """One batch of up to ``orchestrator_batch_size`` records, topped up for a few ms:
        per-batch round trips (Redis, Kafka acks, commit) then amortise over more events."""
        limit = self._settings.orchestrator_batch_size
        batch = await self._consumer.getmany(timeout_ms=200, max_records=limit)
        size = sum(len(r) for r in batch.values())
        deadline = asyncio.get_running_loop().time() + self._settings.orchestrator_gather_s
        loop = asyncio.get_running_loop()
        while batch and size < limit and (left := deadline - loop.time()) > 0:
            more = await self._consumer.getmany(
                timeout_ms=max(1, int(left * 1000)), max_records=limit - size
            )
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                size += len(records)
        return batch

    async def _retry(self, batch: Batch, config: CompiledConfig) -> None:
        delay = 0.1
        while True:
            try:
                await self.handle(batch, config)
                return
            except (RedisError, KafkaError, OSError) as exc:
                log.warning("batch failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _commit(self) -> None:
        """Commit the offsets applied since the last commit. Not of partitions revoked
        meanwhile (aiokafka refuses those outright); their new owner replays the records,
        and the profiles' offsets make that replay a no-op."""
        assigned = self._consumer.assignment()
        pending, self._to_commit = self._to_commit, {}
        offsets = {tp: offset for tp, offset in pending.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved during a rebalance; the new owner replays the records and
            # the profiles' offsets make that replay a no-op.
            log.warning("commit refused after rebalance: %s", exc)

    async def handle(self, batch: Batch, config: CompiledConfig) -> None:
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

        # One publisher for the batch: a customer reprocessed after a lost compare-and-set
        # decides the same records again, and those already acknowledged are not resent.
        publisher = EffectsPublisher(self._producer, self._topics)
        at = format_time(now)
        pending = list(by_customer)
        while pending:
            sources = {
                s for cid in pending for p in by_customer[cid] if (s := merge_source(p.event))
            }
            stored = await self._load(pending, sorted(sources - set(pending)))
            results = []
            for cid in pending:
                profile = stored[cid].profile or Profile(id=cid)
                result = _CustomerResult(profile, stored[cid].version, timer_entries(profile))
                self._process_customer(result, by_customer[cid], stored, config, now)
                results.append(result)
            await self._publish(publisher, at, results)
            done = [r for r in results if not r.dead]
            lost = await self._store_results(done)
            self._cache_stored(results, lost)
            self._count(r for r in done if r.profile.id not in lost)
            if lost:
                log.info("%d profiles changed under us; reprocessing them", len(lost))
            pending = sorted(lost | _without_dead(by_customer, results))

    async def _load(self, customer_ids: list[str], sources: list[str]) -> dict[str, Stored]:
        """The customers' profiles and the merge sources', in one round trip: the cached copy
        where Redis still has its version, else (and for every merge source, about to be
        merged and deleted) the stored profile."""
        cached = self._cache.take(customer_ids)
        self._cache.discard(sources)
        held = {customer_id: stored.version for customer_id, stored in cached.items()}
        fresh = await self._store.refresh([*customer_ids, *sources], held)
        stored: dict[str, Stored] = {}
        outcomes: Counter[str] = Counter()
        for customer_id, found in fresh.items():
            if found is None:
                stored[customer_id] = cached[customer_id]
                outcomes["hit"] += 1
            else:
                stored[customer_id] = found
                outcomes["stale" if customer_id in cached else "miss"] += 1
        for outcome, n in outcomes.items():
            metrics.PROFILE_CACHE.labels(outcome=outcome).inc(n)
        return stored

    def _process_customer(
        self,
        result: _CustomerResult,
        items: list[_Pending],
        stored: dict[str, Stored],
        config: CompiledConfig,
        now: datetime,
    ) -> None:
        for item in items:
            source_id = merge_source(item.event)
            if source_id is not None:
                source = stored.get(source_id)
                if (
                    source is not None
                    and source.profile is not None
                    and merge_profiles(result.profile, source.profile, config)
                ):
                    result.merged.append((source_id, source.version))
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
                # The profile may hold half of it: nothing of this customer is published or
                # stored, and its other events are applied again from the stored profile.
                log.exception("event %s failed in the engine", item.event.message_id)
                result.dead.append((item, f"{type(exc).__name__}: {exc}"))
                return
            result.outcomes.append(outcome)

    async def _publish(
        self, publisher: EffectsPublisher, at: str, results: list[_CustomerResult]
    ) -> None:
        """Actions, history and dead letters, acknowledged before any profile is written (no
        outcome of a customer with a dead-lettered event: they are decided again)."""
        dead: list[Awaitable[None]] = []
        for result in results:
            for outcome in () if result.dead else result.outcomes:
                if outcome.applied:
                    publisher.add(
                        result.profile.id,
                        at,
                        outcome.effects,
                        outcome.transitions,
                        outcome.event,
                    )
            dead.extend(self._dead_letter(item.record, error) for item, error in result.dead)
        await publisher.flush()
        if dead:
            await asyncio.gather(*dead)

    async def _store_results(self, results: list[_CustomerResult]) -> set[str]:
        """Write the changed profiles (CAS); then, in one round trip, index their new timers,
        drop their finished ones and put back what a replayed customer's index misses; then
        delete merged anonymous profiles. Returns the customers another writer changed
        meanwhile.

        Timers are indexed only once their wait is stored: a timer loop that claimed an
        entry before would find no wait and drop the entry as stale. A crash between the
        write and the indexing replays the batch, which changes no profile, so the entries
        of unchanged customers whose events were replays are added where missing (without
        touching entries a timer loop holds)."""
        changed = [r for r in results if r.changed]
        saved = await self._store.save_many([(r.profile, r.version) for r in changed])
        lost = {r.profile.id for r, ok in zip(changed, saved, strict=True) if not ok}
        stored = [r for r in changed if r.profile.id not in lost]
        await self._waits.update(
            add=(entry for r in stored for entry in timer_entries(r.profile) - r.timers_before),
            remove=(entry for r in stored for entry in _gone(r.timers_before, r.profile)),
            add_missing=(
                entry
                for r in results
                if not r.changed and any(not o.applied for o in r.outcomes)
                for entry in timer_entries(r.profile)
            ),
        )
        await self._store.delete_many([m for r in stored for m in r.merged])
        return lost

    def _cache_stored(self, results: list[_CustomerResult], lost: set[str]) -> None:
        """Cache the profiles as stored now (``_load`` took them out). Not one another writer
        won, nor one an event failed on in the engine (it may be changed in place by half an
        event, never stored), nor a merge source (deleted)."""
        merged = {source for r in results for source, _ in r.merged}
        for r in results:
            if r.profile.id not in lost and not r.dead and r.profile.id not in merged:
                self._cache.put(r.profile, r.version + 1 if r.changed else r.version)

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

    def _count(self, results: Iterable[_CustomerResult]) -> None:
        """Metrics of stored results, added up per label set before they reach the metrics;
        lags are measured now, after the profiles are written."""
        events: Counter[str] = Counter()
        moves: Counter[tuple[str, str, str]] = Counter()
        now = datetime.now(UTC)
        for result in results:
            for outcome in result.outcomes:
                if not outcome.applied:
                    events["duplicate"] += 1
                    continue
                events["applied"] += 1
                lag = max((now - parse_time(outcome.event.received_at)).total_seconds(), 0.0)
                metrics.EVENT_LAG.observe(lag)
                for decided in outcome.effects.rule_outcomes:
                    if decided.outcome == "cancelled":
                        metrics.WAIT_CANCEL_LATENCY.observe(lag)
                for move in outcome.transitions:
                    moves[move.journey, move.from_stage or "", move.to_stage] += 1
        for outcome_label, n in events.items():
            metrics.EVENTS_PROCESSED.labels(outcome=outcome_label).inc(n)
        for (journey, from_stage, to_stage), n in moves.items():
            metrics.STAGE_TRANSITIONS.labels(journey, from_stage, to_stage).inc(n)

    def _observe_lag(self, batch: Batch) -> None:
        for tp in batch:
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                position = batch[tp][-1].offset + 1
                metrics.CONSUMER_LAG.labels(partition=str(tp.partition)).set(
                    max(highwater - position, 0)
                )
