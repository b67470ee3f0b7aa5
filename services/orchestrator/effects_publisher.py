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
    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics
        self._records: dict[str, list[tuple[bytes, bytes]]] = {}
        self._decisions: Counter[tuple[str, str]] = Counter()  # counted once Kafka has them

    async def add(
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
            await self._send(
                history,
                key,
                encode_record(
                    "transition",
                    record_id("transition", customer_id, move.journey, event.message_id),
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
            await self._send(
                history,
                key,
                encode_record(
                    "rule",
                    record_id("rule", customer_id, outcome.rule, outcome.outcome, outcome.cause),
                    customer_id,
                    rule=outcome.rule,
                    rule_version=outcome.rule_version,
                    outcome=outcome.outcome,
                    action_id=outcome.action_id,
                    detail=outcome.detail,
                    cause=outcome.cause,
                    at=at,
                ),
            )
            self._decisions[outcome.rule, outcome.outcome] += 1
        for conversion in effects.conversions:
            await self._send(
                history,
                key,
                encode_record(
                    "conversion",
                    record_id("conversion", conversion.action_id, conversion.event_id),
                    customer_id,
                    rule=conversion.rule,
                    action_id=conversion.action_id,
                    group=conversion.group,
                    event_id=conversion.event_id,
                    at=at,
                ),
            )
        for action in effects.actions:
            await self._send(self._topics.actions, key, action.to_json())

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        self._records.setdefault(topic, []).append((key, value))

    async def flush(self) -> None:
        """Send everything queued in per-partition batches and wait for every ack."""
        records, self._records = self._records, {}
        acks = [
            ack
            for topic, items in records.items()
            for ack in await send_batches(self._producer, topic, items)
        ]
        if acks:
            await asyncio.gather(*acks)
        decisions, self._decisions = self._decisions, Counter()
        for (rule, outcome), n in decisions.items():
            metrics.RULE_OUTCOMES.labels(rule, outcome).inc(n)
