"""Per-write-key token buckets, counted in events. Pure: time is an input."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate_per_s`` events per second per key, with bursts up to ``burst`` events."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, cost: int, now: float) -> float:
        """Take ``cost`` tokens; 0.0 when allowed, else the seconds to wait before retrying.

        A request larger than the burst is allowed once the bucket is full and leaves it in
        debt, so a big batch is slowed down, never refused forever.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        needed = min(cost, self._burst)
        if bucket.tokens >= needed:
            bucket.tokens -= cost
            return 0.0
        return max((needed - bucket.tokens) / self._rate, 0.001)

    @staticmethod
    def retry_after(wait: float) -> str:
        """The ``Retry-After`` header for a wait: whole seconds, at least one."""
        return str(max(1, math.ceil(wait)))
