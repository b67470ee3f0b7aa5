"""The timer loop: claims due waits from the index and fires them through the engine.

Per claimed customer: decide (pure engine), publish the action and records (acked), then
write the profile with compare-and-set, then drop the timer entry. A crash before the
write fires the wait again after its lease, with the same action id. A wait is held while
the events loop has not yet applied its customer's events up to the due time
(:mod:`services.orchestrator.events_progress`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services.orchestrator import metrics
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.effects_publisher import EffectsPublisher, timer_entries
from services.orchestrator.events_progress import EventsProgress
from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.wait_index import Claim, TimerEntry, WaitIndex
from shared.engine.compiled import CompiledConfig
from shared.engine.effects import Effects
from shared.engine.waits import fire_wait
from shared.events import format_time
from shared.kafka import partition_for
from shared.profile import PendingWait, Profile
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

# Compare-and-set rounds within one tick before a contended customer's entries are put back.
_CAS_ATTEMPTS = 5
_MAX_FAILING_POLL_S = 1.0  # the slowest poll while ticks fail: waits fire within ~1 s of recovery


class TimerLoop:
    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        store: ProfileStore,
        waits: WaitIndex,
        progress: EventsProgress,
        config: ActiveConfig,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._store = store
        self._waits = waits
        self._progress = progress
        self._config = config
        self._topics = Topics(settings.namespace)

    async def run(self) -> None:
        """Poll every ``timer_poll_s``; go again at once while a burst is being worked off.
        While Redis or Kafka fails, the polls back off to one a second."""
        poll_s = self._settings.timer_poll_s
        delay = poll_s
        while True:
            config = self._config.current
            more_due = False
            if config is not None:
                try:
                    more_due = (await self.tick(config)).more_due
                    metrics.WAITS_PENDING.set(await self._waits.pending())
                    delay = poll_s
                except (RedisError, KafkaError, OSError) as exc:
                    log.warning("timer tick failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, max(poll_s, _MAX_FAILING_POLL_S))
                    continue
            if not more_due:
                await asyncio.sleep(poll_s)

    async def tick(self, config: CompiledConfig, now: datetime | None = None) -> Claim:
        """Claim what is due at ``now`` (the wall clock if not given) in every shard, up to
        ``timer_batch`` in all, and fire it together: one load, one publish, one write."""
        now = now or datetime.now(UTC)
        claim = await self._waits.claim_due(
            now.timestamp(), self._settings.timer_lease_s, self._settings.timer_batch
        )
        held = 0
        if claim.entries:
            held = await self._fire(claim.entries, config, now, await self._behind(now))
        metrics.WAITS_HELD.set(held)
        return claim

    async def _behind(self, now: datetime) -> Callable[[str, float], bool]:
        """Whether a customer's wait due at a time must be held: the events loop has not
        applied every event of the customer's partition received before it (and has been
        behind for less than ``timer_hold_max_s``)."""
        hold_max = self._settings.timer_hold_max_s
        progress = await self._progress.load() if hold_max > 0 else {}
        if not progress:
            return lambda _customer_id, _due: False
        partitions = sorted(await self._producer.partitions_for(self._topics.events))
        now_s = now.timestamp()

        def behind(customer_id: str, due: float) -> bool:
            until = progress.get(partition_for(customer_id.encode(), partitions))
            return until is not None and until < due and now_s - until < hold_max

        return behind

    async def _fire(
        self,
        entries: list[TimerEntry],
        config: CompiledConfig,
        now: datetime,
        behind: Callable[[str, float], bool],
    ) -> int:
        """Fire the claimed entries; returns how many were held."""
        by_customer: dict[str, list[TimerEntry]] = {}
        for entry in entries:
            by_customer.setdefault(entry.customer_id, []).append(entry)
        publisher = EffectsPublisher(self._producer, self._topics)
        at = format_time(now)
        profiles: dict[str, Profile | None] = {}
        # How late each fired wait was, observed once its profile write has landed: an
        # entry put back for a customer still contended fires (and is observed) again later.
        lateness: dict[TimerEntry, float] = {}
        held: set[TimerEntry] = set()
        broken: set[str] = set()  # customers whose waits failed to fire (retried after the lease)
        pending = list(by_customer)
        # A customer written meanwhile (an event, or another loop firing its other waits) is
        # fired again on the fresh profile at once; the publisher does not resend what Kafka
        # already has, so the usual outcome of a lost race is no duplicate at all.
        for _ in range(_CAS_ATTEMPTS):
            stored = await self._store.load_many(pending)
            writes = []
            for customer_id in pending:
                profile = profiles[customer_id] = stored[customer_id].profile
                if profile is None:
                    continue
                before = timer_entries(profile)
                try:
                    fired = _fire_customer(profile, by_customer[customer_id], config, now, behind)
                except Exception:
                    # Would fail the same way now; its entries stay claimed until the lease
                    # runs out, and the other customers' waits fire.
                    log.exception("the waits of %r failed to fire", customer_id)
                    broken.add(customer_id)
                    continue
                for entry, wait, effects in fired:
                    if effects is None:
                        held.add(entry)  # an event that cancels it may still be unapplied
                        continue
                    held.discard(entry)
                    if wait is not None and effects.actions:
                        lateness.setdefault(entry, max(now.timestamp() - wait.due, 0.0))
                    publisher.add(customer_id, at, effects)
                if timer_entries(profile) != before:
                    writes.append((profile, stored[customer_id].version))
            await publisher.flush()
            saved = await self._store.save_many(writes)
            pending = [p.id for (p, _), ok in zip(writes, saved, strict=True) if not ok]
            if not pending:
                break
        lost = set(pending)
        if lost:
            log.info("%d customers kept changing while their waits fired; retrying", len(lost))
        for entry, late in lateness.items():
            if entry.customer_id not in lost:
                metrics.WAIT_LATENESS.observe(late)
        # Every claimed entry now gets its true state: due again at once (still contended),
        # at the next poll (held), at the wait's own due time (still pending), or gone
        # (fired, cancelled, stale).
        keep: list[TimerEntry] = []
        drop: list[TimerEntry] = []
        for entry in entries:
            if entry.customer_id in broken:
                continue
            profile = profiles[entry.customer_id]
            wait = None if profile is None else profile.find_wait(entry.rule, entry.key)
            if entry.customer_id in lost:
                keep.append(replace(entry, due=now.timestamp()))
            elif entry in held:
                keep.append(replace(entry, due=now.timestamp() + self._settings.timer_poll_s))
            elif wait is not None:
                keep.append(replace(entry, due=wait.due))
            else:
                drop.append(entry)
        await self._waits.update(add=keep, remove=drop)
        return sum(1 for entry in held if entry.customer_id not in lost)


def _fire_customer(
    profile: Profile,
    entries: list[TimerEntry],
    config: CompiledConfig,
    now: datetime,
    behind: Callable[[str, float], bool],
) -> list[tuple[TimerEntry, PendingWait | None, Effects | None]]:
    """Fire one customer's claimed entries on its profile: each with its wait (None when
    gone) and its effects (None when held for the events loop)."""
    fired: list[tuple[TimerEntry, PendingWait | None, Effects | None]] = []
    for entry in entries:
        wait = profile.find_wait(entry.rule, entry.key)
        if wait is not None and behind(profile.id, wait.due):
            fired.append((entry, wait, None))
        else:
            fired.append((entry, wait, fire_wait(profile, entry.rule, entry.key, config, now)))
    return fired
