"""The timer loop: claims due waits from the index and fires them through the engine.

Per claimed customer: decide (pure engine), publish the action and records (acked), then
write the profile with compare-and-set, then drop the timer entry. A crash before the
write fires the wait again after its lease, with the same action id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services.orchestrator import metrics
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.effects_publisher import EffectsPublisher, timer_entries
from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.wait_index import TimerEntry, WaitIndex
from shared.engine.compiled import CompiledConfig
from shared.engine.waits import fire_wait
from shared.events import format_time
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)


class TimerLoop:
    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        store: ProfileStore,
        waits: WaitIndex,
        config: ActiveConfig,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._store = store
        self._waits = waits
        self._config = config
        self._topics = Topics(settings.namespace)

    async def run(self) -> None:
        """Poll every ``timer_poll_s``; keep going without pause while waits are due."""
        while True:
            config = self._config.current
            fired = 0
            if config is not None:
                try:
                    fired = await self.tick(config)
                    metrics.WAITS_PENDING.set(await self._waits.pending())
                except (RedisError, KafkaError, OSError) as exc:
                    log.warning("timer tick failed (%s); retrying", exc)
            if not fired:
                await asyncio.sleep(self._settings.timer_poll_s)

    async def tick(self, config: CompiledConfig) -> int:
        """Claim and fire what is due now in every shard; returns how many were claimed."""
        claimed = 0
        for shard in self._waits.shard_keys():
            now = datetime.now(UTC)
            entries = await self._waits.claim(
                shard, now.timestamp(), self._settings.timer_lease_s, self._settings.timer_batch
            )
            if entries:
                claimed += len(entries)
                await self._fire(entries, config, now)
        return claimed

    async def _fire(self, entries: list[TimerEntry], config: CompiledConfig, now: datetime) -> None:
        by_customer: dict[str, list[TimerEntry]] = {}
        for entry in entries:
            by_customer.setdefault(entry.customer_id, []).append(entry)
        stored = await self._store.load_many(list(by_customer))
        publisher = EffectsPublisher(self._producer, self._topics)
        writes = []
        for customer_id, claimed in by_customer.items():
            profile = stored[customer_id].profile
            if profile is None:
                continue
            before = timer_entries(profile)
            for entry in claimed:
                effects = fire_wait(profile, entry.rule, entry.key, config, now)
                if effects.actions:
                    metrics.WAIT_LATENESS.observe(max(now.timestamp() - entry.due, 0.0))
                await publisher.add(customer_id, format_time(now), effects)
            if timer_entries(profile) != before:
                writes.append((profile, stored[customer_id].version))
        await publisher.flush()
        saved = await self._store.save_many(writes)
        lost = {p.id for (p, _), ok in zip(writes, saved, strict=True) if not ok}
        if lost:
            log.info("%d customers changed while their waits fired; retrying", len(lost))
        # Every claimed entry now gets its true state: due again at once (lost the race),
        # at the wait's own due time (still pending), or gone (fired, cancelled, stale).
        keep: list[TimerEntry] = []
        drop: list[TimerEntry] = []
        for entry in entries:
            profile = stored[entry.customer_id].profile
            wait = None if profile is None else profile.find_wait(entry.rule, entry.key)
            if entry.customer_id in lost:
                keep.append(replace(entry, due=now.timestamp()))
            elif wait is not None:
                keep.append(replace(entry, due=wait.due))
            else:
                drop.append(entry)
        await self._waits.add(keep)
        await self._waits.remove(drop)
