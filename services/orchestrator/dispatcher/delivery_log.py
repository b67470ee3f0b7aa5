"""Finished outcomes per action id, in Redis: what makes delivery effectively once.

An outcome is recorded right after the attempt that ended the action, before the history
record and before the offset commit; a redelivered action that has one is not sent again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.dispatch_keys import DispatchKeys

log = logging.getLogger(__name__)


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
        """The outcome; one that does not read as one (no writer of Safar's makes it) still
        says that the action finished, so that it is never sent again: :data:`UNREADABLE`."""
        try:
            outcome = cls(**orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError):
            outcome = None
        if outcome is None or not outcome._well_formed():
            log.error("unreadable recorded outcome %r; the action counts as finished", raw[:200])
            return UNREADABLE
        return outcome

    def _well_formed(self) -> bool:
        return (
            self.status in ("sent", "failed")
            and type(self.attempt) is int
            and (self.status_code is None or type(self.status_code) is int)
            and (self.error is None or type(self.error) is str)
            and type(self.at) is str
        )


UNREADABLE = RecordedOutcome("failed", 0, None, "the recorded outcome is unreadable", "")


class DeliveryLog:
    def __init__(self, redis: Redis, keys: DispatchKeys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def record_many(self, outcomes: list[tuple[str, RecordedOutcome]]) -> list[None]:
        """Record each ``(action_id, outcome)`` unless the action has one already: the first
        one is final. One round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for action_id, outcome in outcomes:
                pipe.set(self._keys.outcome(action_id), outcome.to_json(), ex=self._ttl_s, nx=True)
            await pipe.execute()
        return [None] * len(outcomes)

    async def lookup(self, action_id: str) -> RecordedOutcome | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_lookup(pipe, action_id)
            [raw] = await pipe.execute()
        return self.parse(raw)

    def queue_lookup(self, pipe: Pipeline, action_id: str) -> None:
        """Queue the lookup in a pipeline; its answer goes to :meth:`parse`."""
        pipe.get(self._keys.outcome(action_id))

    @staticmethod
    def parse(raw: bytes | None) -> RecordedOutcome | None:
        return None if raw is None else RecordedOutcome.from_json(raw)
