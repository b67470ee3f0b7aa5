"""Publishes what the engine decided: actions to safar.actions, records to safar.history.

Both loops (events and timers) publish through here and wait for Kafka's acks before they
store the profile, so a crash can repeat an effect (same ids, recognised downstream) but
never lose one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from services.orchestrator import metrics
from services.orchestrator.wait_index import TimerEntry
from shared.engine.effects import Effects
from shared.engine.stage_machine import Transition
from shared.events import Event
from shared.history import encode_record, record_id
from shared.kafka import send_batches
from shared.profile import PendingWait, Profile
from shared.topics import Topics


def timer_entries(profile: Profile) -> set[TimerEntry]:
    return {_entry(profile.id, w) for w in profile.waits}


def _entry(customer_id: str, wait: PendingWait) -> TimerEntry:
    return TimerEntry(customer_id, wait.rule, wait.key, wait.due)


class EffectsPublisher:
    """Queues the records of outcomes and sends them in per-partition batches.

    One publisher serves one batch of work, retries included: a record whose id it already
    had acknowledged (an outcome decided again after a lost compare-and-set) is not sent
    twice. Downstream recognises repeated ids anyway; this keeps them off the topics."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics
        self._records: dict[str, list[tuple[bytes, bytes]]] = {}
        self._queued: list[tuple[str, str]] = []  # (topic, record id)
        self._acknowledged: set[tuple[str, str]] = set()
        self._decisions: Counter[tuple[str, str]] = Counter()  # counted once Kafka has them

    def add(
        self,
        customer_id: str,
        at: str,
        effects: Effects,
        transitions: Iterable[Transition] = (),
        event: Event | None = None,
    ) -> None:
        """Queue the records of one outcome; :meth:`flush` waits for all of them. (The api's
        recorder archives the events themselves from ``safar.events``.)"""
        key = customer_id.encode()
        history = self._topics.history
        for move in transitions:
            assert event is not None
            rid = record_id("transition", customer_id, move.journey, event.message_id)
            self._queue(
                history,
                key,
                rid,
                encode_record(
                    "transition",
                    rid,
                    customer_id,
                    journey=move.journey,
                    from_stage=move.from_stage,
                    to_stage=move.to_stage,
                    move=move.kind,
                    at=move.at,
                    event_id=event.message_id,
                ),
            )
        for outcome in effects.rule_outcomes:
            rid = record_id("rule", customer_id, outcome.rule, outcome.outcome, outcome.cause)
            if self._queue(
                history,
                key,
                rid,
                encode_record(
                    "rule",
                    rid,
                    customer_id,
                    rule=outcome.rule,
                    rule_version=outcome.rule_version,
                    outcome=outcome.outcome,
                    action_id=outcome.action_id,
                    detail=outcome.detail,
                    cause=outcome.cause,
                    at=at,
                ),
            ):
                self._decisions[outcome.rule, outcome.outcome] += 1
        for conversion in effects.conversions:
            rid = record_id("conversion", conversion.action_id, conversion.event_id)
            self._queue(
                history,
                key,
                rid,
                encode_record(
                    "conversion",
                    rid,
                    customer_id,
                    rule=conversion.rule,
                    action_id=conversion.action_id,
                    group=conversion.group,
                    event_id=conversion.event_id,
                    at=at,
                ),
            )
        for action in effects.actions:
            self._queue(self._topics.actions, key, action.action_id, action.to_json())

    def _queue(self, topic: str, key: bytes, rid: str, value: bytes) -> bool:
        """Queue one record unless its id was acknowledged already; True if queued."""
        if (topic, rid) in self._acknowledged:
            return False
        self._records.setdefault(topic, []).append((key, value))
        self._queued.append((topic, rid))
        return True

    async def flush(self) -> None:
        """Send everything queued in per-partition batches and wait for every ack. What is
        queued stays queued until Kafka has acknowledged it all: a flush retried after an
        error may send a record twice (same id), never lose one."""
        acks = [
            ack
            for topic, items in self._records.items()
            for ack in await send_batches(self._producer, topic, items)
        ]
        if acks:
            await asyncio.gather(*acks)
        self._records = {}
        self._acknowledged.update(self._queued)
        self._queued = []
        decisions, self._decisions = self._decisions, Counter()
        for (rule, outcome), n in decisions.items():
            metrics.RULE_OUTCOMES.labels(rule, outcome).inc(n)
