"""Redis memory per customer profile (demo journey, no pending waits)."""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis

from bench.harness import demo_events, demo_snapshot
from services.orchestrator.profile_store import ProfileStore
from shared.customer_keys import CustomerKeys
from shared.definitions import ConfigSnapshot
from shared.engine.compiled import CompiledConfig
from shared.engine.process import process_event
from shared.profile import Profile
from shared.settings import Settings


def _journey_only() -> CompiledConfig:
    demo = demo_snapshot()
    bundle = demo.bundle.model_copy(update={"rules": []})
    return CompiledConfig.compile(ConfigSnapshot(version=1, bundle=bundle))


async def run(settings: Settings, customers: int = 10_000, events_each: int = 8) -> float:
    """Bytes of Redis memory per profile after ``events_each`` events per customer."""
    config = _journey_only()
    profiles: dict[str, Profile] = {}
    now = datetime.now(UTC)
    events = demo_events(customers * events_each, customers)
    for offset, event in enumerate(events):
        outcome = process_event(
            profiles.get(event.customer_id),
            event,
            config,
            now,
            partition=offset % 12,
            offset=offset,
            dedupe_window=settings.dedupe_window,
        )
        profiles[event.customer_id] = outcome.profile
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        before = int((await redis.info("memory"))["used_memory"])
        store = ProfileStore(redis, CustomerKeys("mem"))
        items = list(profiles.values())
        for start in range(0, len(items), 1000):
            await store.save_many([(p, 0) for p in items[start : start + 1000]])
        after = int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()
    return (after - before) / len(profiles)
