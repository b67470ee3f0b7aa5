"""The dispatcher loop: safar.actions -> channels -> safar.history (and safar.dlq).

Each action read gets one attempt at once, concurrently with the others (bounded by
``dispatch_max_concurrency``); a retriable failure goes to the Redis retry schedule, which a
second loop drains when entries fall due, so a slow or failing receiver never holds up the
partition. Effects come first, in this order: the outcome in the delivery log, then the
history record; offsets are committed only past records whose effects are durable. A crash
replays records whose outcome is then found in the log and skipped; the only duplicates are
attempts that reached the receiver before their outcome was recorded, with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.orchestrator import metrics
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.dispatcher.action_history import ActionStatus, action_record
from services.orchestrator.dispatcher.channels import CHANNELS, Channel, Delivered
from services.orchestrator.dispatcher.delivery_log import UNREADABLE, DeliveryLog, RecordedOutcome
from services.orchestrator.dispatcher.email import EmailChannel
from services.orchestrator.dispatcher.exceptions import DeliveryError
from services.orchestrator.dispatcher.http_client import HttpClient
from services.orchestrator.dispatcher.kafka_channel import KafkaChannel
from services.orchestrator.dispatcher.log_channel import LogChannel
from services.orchestrator.dispatcher.offset_tracker import OffsetTracker
from services.orchestrator.dispatcher.private_targets import public_addresses
from services.orchestrator.dispatcher.retry_policy import Decision, RetryPolicy, decide
from services.orchestrator.dispatcher.retry_schedule import RetrySchedule
from services.orchestrator.dispatcher.webhook import USER_AGENT, WebhookChannel
from services.orchestrator.pacing import Every
from shared.actions import ActionDecodeError, ActionRecord, unseal
from shared.coalescer import Coalescer
from shared.dead_letters import dead_letter
from shared.dispatch_keys import DispatchKeys
from shared.events import format_time
from shared.kafka import make_consumer, send_batches, stop_consumer
from shared.settings import Settings
from shared.templates import TemplateRenderer, TemplateRenderError, template_context
from shared.topics import Topics
from shared.webhook_secret import check_secret

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_BACKOFF_S = 5.0
# Outcome and history records of deliveries this close together go out as one batch.
_AFTER_LINGER_S = 0.01
_CANCEL_WAIT_S = 5.0  # how long stop() waits for cancelled deliveries to end
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "action_id": str,
    "rule": str,
    "rule_version": int,
    "customer_id": str,
    "channel": str,
    "spec": dict,
    "customer": dict,
    "trigger": (dict, type(None)),
    "created_at": str,
    "trigger_received_at": (str, type(None)),
    "attempt": int,
    "not_before": (str, type(None)),
}


def decode_action(raw: bytes) -> ActionRecord:
    """An ActionRecord whose fields have the types the dispatcher relies on."""
    action = ActionRecord.from_json(raw)
    for name, expected in _FIELD_TYPES.items():
        value = getattr(action, name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ActionDecodeError(f"action field {name} has the wrong type: {value!r:.100}")
    if not action.action_id or not action.customer_id or action.attempt < 0:
        raise ActionDecodeError("an action needs an action_id, a customer_id and attempt >= 0")
    try:
        action.to_json()  # as a retry and a dead letter write it again (orjson: 254 levels)
    except orjson.JSONEncodeError:
        raise ActionDecodeError("the action nests too deeply to be written again") from None
    return action


@dataclasses.dataclass(slots=True)
class _KeyedLock:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


class _HandOverOnRevoke(ConsumerRebalanceListener):
    """Revoked partitions are handed over after their deliveries finish and are committed."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._dispatcher._hand_over(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("dispatcher assigned partitions %s", sorted(tp.partition for tp in assigned))


class Dispatcher:
    """Delivers actions; ``start()`` joins the dispatcher group, ``stop()`` leaves it."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        producer: AIOKafkaProducer,
        config: ActiveConfig,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._config = config
        self._topics = Topics(settings.namespace)
        keys = DispatchKeys(settings.namespace)
        self._redis = redis
        self._outcomes = DeliveryLog(redis, keys, settings.dispatch_outcome_ttl_s)
        self._retries = RetrySchedule(redis, keys)
        # What every action asks for, batched across the deliveries of one event-loop turn;
        # what it does once delivered (not on the way to the receiver) across a few ms.
        self._known = Coalescer(self._look_up)
        self._record = Coalescer(self._outcomes.record_many, linger_s=_AFTER_LINGER_S)
        self._history = Coalescer(self._send_history, linger_s=_AFTER_LINGER_S)
        self._policy = RetryPolicy.from_settings(settings)
        self._renderer = TemplateRenderer()
        self._rng = rng or random.Random()
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._slots = asyncio.Semaphore(settings.dispatch_max_concurrency)
        self._max_buffered = max(
            2 * settings.dispatch_batch_size, 4 * settings.dispatch_max_concurrency
        )
        self._grace_s = (
            max(
                settings.webhook_timeout_s,
                settings.smtp_timeout_s,
                settings.dispatch_kafka_timeout_s,
            )
            + 2.0
        )
        self._locks: dict[str, _KeyedLock] = {}
        self._by_partition: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._scheduled: set[asyncio.Task[None]] = set()
        # Tasks holding a delivery slot; the others are waiting for one and may be cancelled
        # freely (their records are replayed).
        self._delivering: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._http: HttpClient | None = None
        self._channels: dict[str, Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._commit_pace = Every(settings.kafka_commit_interval_s)

    @property
    def ready(self) -> bool:
        """Running, and the consumer group has handed it partitions."""
        running = self._task is not None and not self._task.done()
        return running and self._consumer is not None and bool(self._consumer.assignment())

    @property
    def task(self) -> asyncio.Task[None]:
        """The running loops; it ends only by ``stop()`` or by a bug (its exception)."""
        assert self._task is not None, "start() first"
        return self._task

    async def start(self) -> None:
        if self._task is not None:
            return
        settings = self._settings
        if settings.webhook_secret is not None:
            try:
                check_secret(settings.webhook_secret.get_secret_value())
            except ValueError as exc:  # it still signs (rules saved with one still do too)
                log.warning("SAFAR_WEBHOOK_SECRET: %s; rotate it", exc)
        self._http = HttpClient(
            user_agent=USER_AGENT,
            max_idle_per_host=settings.dispatch_max_concurrency,
            resolve=None if settings.webhook_allow_private else public_addresses,
        )
        self._channels = {
            "webhook": WebhookChannel(
                self._http,
                self._renderer,
                default_secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_s,
            ),
            "email": EmailChannel(settings, self._renderer),
            "kafka": KafkaChannel(
                self._producer, self._renderer, timeout_s=settings.dispatch_kafka_timeout_s
            ),
            "log": LogChannel(self._renderer),
        }
        consumer = make_consumer(
            settings,
            group_id=self._topics.group("dispatcher"),
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=settings.dispatch_session_timeout_ms,
            heartbeat_interval_ms=max(settings.dispatch_session_timeout_ms // 3, 100),
        )
        try:
            await consumer.start()
        except BaseException:
            await self._http.close()
            self._http = None
            raise
        consumer.subscribe([self._topics.actions], listener=_HandOverOnRevoke(self))
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        """Stop reading, let deliveries in flight finish (bounded), commit, close."""
        if self._task is None and self._consumer is None:
            return
        log.info("dispatcher stopping")
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()  # again if a library swallowed the first (see _raise_if_cancelled)
            await asyncio.wait([task], timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("the dispatcher had stopped on an error: %r", task.exception())
        await self._finish_or_cancel(set(self._scheduled).union(*self._by_partition.values()))
        for coalescer in (self._known, self._record, self._history):
            await coalescer.close()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._commit(consumer)
            await stop_consumer(consumer)
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        log.info("dispatcher stopped")

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the two loops -------------------------------------------------------------------

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._consume(), name="dispatcher-consume")
            loops.create_task(self._drain_retries(), name="dispatcher-retries")

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            _raise_if_cancelled()
            if self._failure is not None:
                raise self._failure
            # Backpressure: stop fetching while enough deliveries are waiting, but keep
            # polling so that the group does not consider this member gone.
            if self._tracker.in_flight >= self._max_buffered:
                consumer.pause(*consumer.assignment())
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            batch = await consumer.getmany(
                timeout_ms=100, max_records=self._settings.dispatch_batch_size
            )
            for tp, records in batch.items():
                for record in records:
                    self._accept(tp, record)
            if self._commit_pace.due():
                await self._commit(consumer)

    def _accept(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._tracker.track(tp, record.offset)
        task = asyncio.create_task(self._deliver_record(record))
        self._by_partition.setdefault(tp, set()).add(task)
        task.add_done_callback(partial(self._record_done, tp, record.offset))

    def _record_done(self, tp: TopicPartition, offset: int, task: asyncio.Task[None]) -> None:
        self._by_partition.get(tp, set()).discard(task)
        if task.cancelled():
            return  # not finished: the record is replayed (the partition moved or we stop)
        failure = task.exception()
        if failure is not None:
            log.error("delivering %s@%d failed unexpectedly", tp, offset, exc_info=failure)
            self._failure = failure
            return
        self._tracker.finish(tp, offset)

    async def _drain_retries(self) -> None:
        """Take due retries from the schedule, as many as there are free delivery slots."""
        limit = self._settings.dispatch_batch_size
        while True:
            await asyncio.sleep(self._settings.dispatch_retry_poll_s)
            _raise_if_cancelled()
            await self._slots.acquire()  # wait for a slot in turn with the consumer's records
            permits = 1
            try:
                while permits < limit and not self._slots.locked():
                    await self._slots.acquire()
                    permits += 1
                claimed = await self._persist(
                    partial(
                        self._retries.claim,
                        time.time(),
                        permits,
                        self._settings.dispatch_retry_lease_s,
                    ),
                    "claiming due retries",
                )
            except BaseException:
                for _ in range(permits):
                    self._slots.release()
                raise
            for _ in range(permits - len(claimed)):
                self._slots.release()
            for action_id, raw in claimed:
                task = asyncio.create_task(self._deliver_scheduled(action_id, raw))
                self._scheduled.add(task)
                task.add_done_callback(self._scheduled_done)

    def _scheduled_done(self, task: asyncio.Task[None]) -> None:
        self._scheduled.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a scheduled retry failed unexpectedly", exc_info=task.exception())
            self._failure = task.exception()

    # --- one action ----------------------------------------------------------------------

    async def _deliver_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            action = decode_action(record.value or b"")
        except ActionDecodeError as exc:
            await self._dead_letter_raw(
                record.key,
                record.value or b"",
                str(exc),
                f"{record.topic}/{record.partition}@{record.offset}",
            )
            return
        async with self._slots, self._delivery_slot_held(), self._exclusive(action.action_id):
            recorded, scheduled = await self._persist(
                partial(self._known, action.action_id), "outcome lookup"
            )
            if recorded is not None:
                await self._skip_finished(action, recorded)
                return
            if scheduled:
                # A redelivery of an action whose retry is already scheduled: the schedule
                # owns it now.
                metrics.ACTIONS.labels(_channel_label(action), "duplicate").inc()
                return
            due = _parse_time(action.not_before)
            if due is not None and due.timestamp() > time.time():
                # Published with a time before which it must not be attempted.
                await self._persist(
                    partial(self._retries.put, action, due.timestamp()), "scheduling"
                )
                return
            await self._attempt(action, scheduled=False)

    async def _deliver_scheduled(self, action_id: str, raw: bytes) -> None:
        """One due retry; the caller acquired a delivery slot for it."""
        try:
            try:
                action = decode_action(raw)
            except ActionDecodeError as exc:
                await self._dead_letter_raw(None, raw, str(exc), "retry schedule")
                await self._persist(partial(self._retries.remove, action_id), "unscheduling")
                return
            async with self._delivery_slot_held(), self._exclusive(action.action_id):
                if await self._finished_before(action):
                    await self._persist(partial(self._retries.remove, action_id), "unscheduling")
                    return
                await self._attempt(action, scheduled=True)
        finally:
            self._slots.release()

    async def _look_up(self, action_ids: list[str]) -> list[tuple[RecordedOutcome | None, bool]]:
        """Each action's recorded outcome, and whether a retry of it is scheduled: one round
        trip for all."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for action_id in action_ids:
                self._outcomes.queue_lookup(pipe, action_id)
                self._retries.queue_contains(pipe, action_id)
            answers = await pipe.execute()
        return [
            (DeliveryLog.parse(answers[i]), bool(answers[i + 1])) for i in range(0, len(answers), 2)
        ]

    async def _send_history(self, records: list[tuple[bytes, bytes]]) -> list[None]:
        """History records, one Kafka record batch per partition, acknowledged."""
        futures = await send_batches(self._producer, self._topics.history, records)
        await asyncio.gather(*futures)
        return [None] * len(records)

    async def _finished_before(self, action: ActionRecord) -> bool:
        """True when the action's outcome is recorded (then skipped, see
        :meth:`_skip_finished`)."""
        recorded = await self._persist(
            partial(self._outcomes.lookup, action.action_id), "outcome lookup"
        )
        if recorded is None:
            return False
        await self._skip_finished(action, recorded)
        return True

    async def _skip_finished(self, action: ActionRecord, recorded: RecordedOutcome) -> None:
        """An action finished before: its history record is published again (same id) in
        case a crash came between recording and publishing (unless the record is
        unreadable: history keeps what was published when it was written)."""
        if recorded is not UNREADABLE:
            await self._publish_outcome(action, recorded)
        metrics.ACTIONS.labels(_channel_label(action), "duplicate").inc()
        log.debug("action %s already %s; skipped", action.action_id, recorded.status)

    async def _attempt(self, action: ActionRecord, *, scheduled: bool) -> None:
        attempt = action.attempt + 1
        label = _channel_label(action)
        started = time.monotonic()
        delivered: Delivered | None = None
        error: DeliveryError | None = None
        channel = self._channels.get(action.channel)
        if channel is None:
            error = DeliveryError(
                f"unknown channel {action.channel!r}; channels are {', '.join(CHANNELS)}",
                retriable=False,
            )
        else:
            try:
                unsealed = self._unsealed(action)
                delivered = await channel.deliver(unsealed, template_context(action))
            except TemplateRenderError as exc:  # the same template never renders
                error = DeliveryError(str(exc), retriable=False)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:
                # A bug that one action's content triggers fails that action, not the
                # dispatcher: otherwise the same record would crash every restart.
                log.exception("delivering action %s hit a bug", action.action_id)
                error = DeliveryError(
                    f"internal error: {type(exc).__name__}: {exc}", retriable=False
                )
        metrics.DELIVERY_DURATION.labels(label).observe(time.monotonic() - started)
        now = datetime.now(UTC)
        decision = decide(self._policy, attempt, error, self._rng.random())
        if decision.status == "sent":
            assert delivered is not None
            await self._sent(action, attempt, delivered, now, scheduled=scheduled)
        elif decision.status == "retrying":
            assert error is not None
            await self._retry_later(action, attempt, error, decision, now)
        else:
            assert error is not None
            await self._failed(action, attempt, error, decision, now, scheduled=scheduled)
        metrics.ACTIONS.labels(label, decision.status).inc()

    def _unsealed(self, action: ActionRecord) -> ActionRecord:
        """The action with the credentials its record leaves out (``sealed``) taken from its
        rule as configured now: a rotated secret or token is the new one. Only for the url
        the record has: credentials go nowhere else."""
        if "sealed" not in action.spec:
            return action
        sealed = action.spec["sealed"]
        if not isinstance(sealed, list) or not all(isinstance(name, str) for name in sealed):
            raise DeliveryError(
                f"the action's sealed is not a list of field names: {sealed!r:.100}",
                retriable=False,
            )
        if not sealed:
            return action
        config = self._config.current
        rule = config.rules.get(action.rule) if config is not None else None
        if rule is None or rule.version < action.rule_version:
            # This process may not have the configuration the action was decided under yet
            # (each follows safar.config on its own); else the rule was disabled or deleted.
            raise DeliveryError(
                f"rule {action.rule!r} (version {action.rule_version}) is not in this "
                f"dispatcher's configuration, which holds its {' and '.join(sealed)}",
                retriable=True,
            )
        spec = rule.action_spec
        if spec.get("channel") != action.channel or spec.get("url") != action.spec.get("url"):
            raise DeliveryError(
                f"rule {action.rule!r} now has another {action.channel} target: its "
                f"{' and '.join(sealed)} are for that one",
                retriable=False,
            )
        return dataclasses.replace(action, spec=unseal(action.spec, spec))

    async def _sent(
        self,
        action: ActionRecord,
        attempt: int,
        delivered: Delivered,
        now: datetime,
        *,
        scheduled: bool,
    ) -> None:
        outcome = RecordedOutcome("sent", attempt, delivered.status_code, None, format_time(now))
        await self._finish(action, outcome, scheduled=scheduled)
        received = _parse_time(action.trigger_received_at)
        if received is not None:
            metrics.EVENT_TO_ACTION.observe(max((now - received).total_seconds(), 0.0))

    async def _retry_later(
        self,
        action: ActionRecord,
        attempt: int,
        error: DeliveryError,
        decision: Decision,
        now: datetime,
    ) -> None:
        assert decision.retry_in_s is not None
        due = now + timedelta(seconds=decision.retry_in_s)
        retry = dataclasses.replace(action, attempt=attempt, not_before=format_time(due))
        await self._persist(
            partial(self._retries.put, retry, due.timestamp()), "scheduling a retry"
        )
        await self._publish_history(
            action,
            "retrying",
            attempt,
            error.status_code,
            error.message,
            format_time(now),
            retry_at=retry.not_before,
        )
        log.info(
            "action %s attempt %d failed (%s); next attempt in %.1fs",
            action.action_id,
            attempt,
            error.message,
            decision.retry_in_s,
        )

    async def _failed(
        self,
        action: ActionRecord,
        attempt: int,
        error: DeliveryError,
        decision: Decision,
        now: datetime,
        *,
        scheduled: bool,
    ) -> None:
        reason = decision.reason or error.message
        await self._persist(
            partial(
                dead_letter,
                self._producer,
                self._topics.dlq,
                kind="action",
                key=action.customer_id.encode(),
                value=action.to_json(),
                error=reason,
                source="dispatcher",
                attempts=attempt,
            ),
            "dead-lettering",
        )
        metrics.DLQ.labels(kind="action").inc()
        outcome = RecordedOutcome("failed", attempt, error.status_code, reason, format_time(now))
        await self._finish(action, outcome, scheduled=scheduled)
        log.warning("action %s failed after %d attempt(s): %s", action.action_id, attempt, reason)

    # --- effects -------------------------------------------------------------------------

    async def _finish(
        self, action: ActionRecord, outcome: RecordedOutcome, *, scheduled: bool
    ) -> None:
        """A final outcome: recorded (a redelivery then skips the action), published to
        history, and the action's retry, if it had one, unscheduled."""
        await self._persist(partial(self._record, (action.action_id, outcome)), "recording")
        await self._publish_outcome(action, outcome)
        if scheduled:
            await self._persist(partial(self._retries.remove, action.action_id), "unscheduling")

    async def _publish_outcome(self, action: ActionRecord, outcome: RecordedOutcome) -> None:
        await self._publish_history(
            action, outcome.status, outcome.attempt, outcome.status_code, outcome.error, outcome.at
        )

    async def _publish_history(
        self,
        action: ActionRecord,
        status: ActionStatus,
        attempt: int,
        status_code: int | None,
        error: str | None,
        at: str,
        *,
        retry_at: str | None = None,
    ) -> None:
        value = action_record(
            action,
            status=status,
            attempt=attempt,
            status_code=status_code,
            error=error,
            at=at,
            retry_at=retry_at,
        )
        await self._persist(
            partial(self._history, (action.customer_id.encode(), value)), "publishing history"
        )

    async def _dead_letter_raw(
        self, key: bytes | None, value: bytes, error: str, source: str
    ) -> None:
        log.warning("dead-lettering an undecodable action from %s: %s", source, error)
        await self._persist(
            partial(
                dead_letter,
                self._producer,
                self._topics.dlq,
                kind="action",
                key=key,
                value=value,
                error=error,
                source=source,
            ),
            "dead-lettering",
        )
        metrics.DLQ.labels(kind="action").inc()

    async def _persist(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run an effect until it succeeds: Redis or Kafka being away delays, never skips."""
        delay = 0.1
        while True:
            try:
                return await operation()
            except (RedisError, KafkaError, OSError) as exc:
                _raise_if_cancelled()
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    @contextlib.asynccontextmanager
    async def _delivery_slot_held(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._delivering.add(task)
        try:
            yield
        finally:
            self._delivering.discard(task)

    @contextlib.asynccontextmanager
    async def _exclusive(self, action_id: str) -> AsyncIterator[None]:
        """One attempt at a time per action id in this process (a record and its retry, or
        the same action emitted twice, never race each other here)."""
        entry = self._locks.setdefault(action_id, _KeyedLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[action_id]

    # --- offsets -------------------------------------------------------------------------

    async def _commit(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition] | None = None
    ) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: position
            for tp, position in self._tracker.committable(partitions).items()
            if tp in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved: the new owner replays from the last commit and the
            # delivery log turns the replay of finished actions into skips.
            log.warning("commit refused after a rebalance: %s", exc)
            return
        except KafkaError as exc:
            log.warning("commit failed (%s); the next poll tries again", exc)
            return
        self._tracker.committed(offsets)

    async def _finish_or_cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        """Let attempts under way finish (bounded by the grace period); cancel the rest,
        whose records the next owner of their partition replays."""
        if not tasks:
            return
        for task in tasks - self._delivering:
            task.cancel()
        _, late = await asyncio.wait(tasks, timeout=self._grace_s)
        # Cancelled again until they end (redis-py can swallow a cancel; with no command
        # timeout a stalled Redis would hold them), but not waited for forever.
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while late and time.monotonic() < deadline:
            for task in late:
                task.cancel()
            _, late = await asyncio.wait(late, timeout=0.2)
        if late:
            log.warning(
                "%d deliveries did not stop within %.0fs; leaving them", len(late), _CANCEL_WAIT_S
            )

    async def _hand_over(self, revoked: set[TopicPartition]) -> None:
        tasks: set[asyncio.Task[None]] = set().union(
            *(self._by_partition.get(tp, set()) for tp in revoked)
        )
        await self._finish_or_cancel(tasks)
        if self._consumer is not None:
            await self._commit(self._consumer, revoked)
        self._tracker.forget(revoked)
        for tp in revoked:
            self._by_partition.pop(tp, None)
        log.info("dispatcher handed over partitions %s", sorted(tp.partition for tp in revoked))


def _raise_if_cancelled() -> None:
    """Deliver a cancellation that a library swallowed: redis-py (8.1, Python 3.11) loses
    some cancel()s that land during a command (measured here: about one in ten), and the
    task goes on with ``cancelling()`` set; a loop that never looks would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _parse_time(value: str | None) -> datetime | None:
    """An ISO time with a zone from an action, or None when absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _channel_label(action: ActionRecord) -> str:
    return action.channel if action.channel in CHANNELS else "unknown"
