"""How far the events loop has got, per partition of safar.events, for the timer loop.

A wait must not fire while an event received before its due time is still unprocessed:
that event may be the purchase that cancels it. The events loop records, per partition, a
time up to which every event ingest received is applied: the broker timestamp of the newest
record it has applied, or, for a partition read to its end, the moment it asked the broker
for the end offsets (both less a small margin). The timer loop holds a due wait while its
customer's partition is behind the due time, for at most ``timer_hold_max_s`` (so that a
stopped events loop delays waits, but does not keep them forever).
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.customer_keys import CustomerKeys


class EventsProgress:
    def __init__(self, redis: Redis, keys: CustomerKeys) -> None:
        self._redis = redis
        self._key = keys.events_progress

    async def mark(self, applied_until: dict[int, float]) -> None:
        """Record, per partition, the epoch time up to which received events are applied."""
        if applied_until:
            await self._redis.hset(self._key, mapping=applied_until)  # type: ignore[arg-type]

    async def load(self) -> dict[int, float]:
        raw = await self._redis.hgetall(self._key)
        return {int(partition): float(until) for partition, until in raw.items()}
