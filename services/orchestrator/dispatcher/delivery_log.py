"""Finished outcomes per action id, in Redis: what makes delivery effectively once.

An outcome is recorded right after the attempt that ended the action, before the history
record and before the offset commit; a redelivered action that has one is not sent again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis

from services.orchestrator.dispatcher.redis_keys import DispatchKeys


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    status: Literal["sent", "failed"]
    attempt: int
    status_code: int | None
    error: str | None
    at: str  # when the outcome was decided (ISO, UTC)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> RecordedOutcome:
        return cls(**orjson.loads(raw))


class DeliveryLog:
    def __init__(self, redis: Redis, keys: DispatchKeys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def record(self, action_id: str, outcome: RecordedOutcome) -> None:
        """Record the outcome unless one is recorded already: the first one is final."""
        await self._redis.set(
            self._keys.outcome(action_id), outcome.to_json(), ex=self._ttl_s, nx=True
        )

    async def lookup(self, action_id: str) -> RecordedOutcome | None:
        raw = await self._redis.get(self._keys.outcome(action_id))
        return None if raw is None else RecordedOutcome.from_json(raw)
