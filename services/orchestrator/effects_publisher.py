"""Publishes what the engine decided: actions to safar.actions, records to safar.history.

Both loops (events and timers) publish through here and wait for Kafka's acks before they
store the profile, so a crash can repeat an effect (same ids, recognised downstream) but
never lose one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

from aiokafka import AIOKafkaProducer

from services.orchestrator import metrics
from services.orchestrator.wait_index import TimerEntry
from shared.engine.effects import Effects
from shared.engine.stage_machine import Transition
from shared.history import encode_record, record_id
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
        self._pending: list[Awaitable[object]] = []

    async def add(
        self,
        customer_id: str,
        effects: Effects,
        transitions: Iterable[Transition] = (),
        event_id: str | None = None,
    ) -> None:
        """Queue the records of one outcome; :meth:`flush` waits for all of them."""
        key = customer_id.encode()
        history = self._topics.history
        for move in transitions:
            assert event_id is not None
            await self._send(
                history,
                key,
                encode_record(
                    "transition",
                    record_id("transition", customer_id, move.journey, event_id),
                    customer_id,
                    journey=move.journey,
                    from_stage=move.from_stage,
                    to_stage=move.to_stage,
                    move=move.kind,
                    at=move.at,
                    event_id=event_id,
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
                ),
            )
            metrics.RULE_OUTCOMES.labels(outcome.rule, outcome.outcome).inc()
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
                ),
            )
        for action in effects.actions:
            await self._send(self._topics.actions, key, action.to_json())

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        self._pending.append(await self._producer.send(topic, value, key=key))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
