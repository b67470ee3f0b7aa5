"""Retries waiting for their time, in Redis, so that no partition waits for them.

A sorted set orders action ids by due time (epoch ms); a hash holds the ActionRecord of each
next attempt. Claiming moves an entry's due time a lease ahead instead of removing it: if
the claimer dies mid-attempt, the entry falls due again and any dispatcher takes it over.
"""

from __future__ import annotations

import logging
import math

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.actions import ActionRecord
from shared.dispatch_keys import DispatchKeys

log = logging.getLogger(__name__)

# KEYS: due zset, actions hash. ARGV: now (ms), how many, lease end (ms).
# Returns a flat list: id1, record1, id2, record2, ...
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = record
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""


class RetrySchedule:
    def __init__(self, redis: Redis, keys: DispatchKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._claim = redis.register_script(_CLAIM)

    async def put(self, action: ActionRecord, due_at_s: float) -> None:
        """Schedule (or reschedule) the next attempt of ``action``."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.retry_actions, action.action_id, action.to_json())
            # Rounded up, so that an entry is never claimed before its time.
            pipe.zadd(self._keys.retry_due, {action.action_id: math.ceil(due_at_s * 1000)})
            await pipe.execute()

    async def claim(self, now_s: float, limit: int, lease_s: float) -> list[tuple[str, bytes]]:
        """Up to ``limit`` due entries, each held for ``lease_s`` seconds."""
        flat = await self._claim(
            keys=[self._keys.retry_due, self._keys.retry_actions],
            args=[_ms(now_s), limit, _ms(now_s + lease_s)],
        )
        claimed, junk = [], []
        for i in range(0, len(flat), 2):
            try:
                claimed.append((_text(flat[i]), _bytes(flat[i + 1])))
            except UnicodeDecodeError:
                junk.append(flat[i])
        if junk:
            # No writer of Safar's makes them; left in place they would be claimed forever.
            log.error("dropping scheduled retries whose id is not text: %s", junk)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys.retry_due, *junk)
                pipe.hdel(self._keys.retry_actions, *junk)
                await pipe.execute()
        return claimed

    async def remove(self, action_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys.retry_due, action_id)
            pipe.hdel(self._keys.retry_actions, action_id)
            await pipe.execute()

    async def contains(self, action_id: str) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_contains(pipe, action_id)
            [found] = await pipe.execute()
        return bool(found)

    def queue_contains(self, pipe: Pipeline, action_id: str) -> None:
        """Queue, in a pipeline, whether a retry of the action is scheduled (truthy if so)."""
        pipe.hexists(self._keys.retry_actions, action_id)

    async def size(self) -> int:
        return int(await self._redis.zcard(self._keys.retry_due))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
