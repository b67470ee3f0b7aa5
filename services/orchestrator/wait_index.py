"""The timer index: sorted sets of due times, sharded so Redis Cluster can spread them.

A member names ``customer/rule/key``; the wait itself lives in the customer's profile, so
a stale member (its wait cancelled or fired) is harmless and simply dropped when claimed.
Claiming pushes a member's score forward by a lease: several timer loops can run, each
claim goes to one of them, and a claimer that dies loses nothing (the lease runs out).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from services.orchestrator.lua_scripts import LuaScript, ScriptCall, run_scripts
from shared.customer_keys import CustomerKeys

log = logging.getLogger(__name__)

# KEYS[1] shard; ARGV: now, lease end, limit. Returns [member, score, member, score, ...].
_CLAIM = LuaScript("""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], ARGV[2], due[i])
end
return due
""")


@dataclass(frozen=True, slots=True)
class TimerEntry:
    customer_id: str
    rule: str
    key: str
    due: float

    @property
    def member(self) -> str:
        return CustomerKeys.timer_member(self.customer_id, self.rule, self.key)

    @classmethod
    def parse(cls, member: bytes | str, due: float) -> TimerEntry:
        text = member.decode() if isinstance(member, bytes) else member
        return cls(*CustomerKeys.parse_timer_member(text), due)


@dataclass(frozen=True, slots=True)
class Claim:
    entries: list[TimerEntry]  # earliest due first
    more_due: bool  # a shard gave its whole share: more may be due already


def _parse(raw: Sequence[bytes]) -> tuple[list[TimerEntry], list[bytes]]:
    """``[member, score, member, score, ...]`` as entries, and the members that are not
    UTF-8 text (no writer of Safar's makes them; left in place, they would be claimed
    again and again)."""
    entries, junk = [], []
    for i in range(0, len(raw), 2):
        try:
            entries.append(TimerEntry.parse(raw[i], float(raw[i + 1])))
        except UnicodeDecodeError:
            junk.append(raw[i])
    return entries, junk


class WaitIndex:
    def __init__(self, redis: Redis, keys: CustomerKeys, shards: int) -> None:
        self._redis = redis
        self._keys = keys
        self.shards = shards

    def shard(self, customer_id: str) -> str:
        return self._keys.timer_shard(customer_id, self.shards)

    def shard_keys(self) -> list[str]:
        return self._keys.timer_shards(self.shards)

    async def update(
        self,
        *,
        add: Iterable[TimerEntry] = (),
        add_missing: Iterable[TimerEntry] = (),
        remove: Iterable[TimerEntry] = (),
    ) -> None:
        """One round trip: add or move the ``add`` entries (ZADD replaces the score of an
        existing member); add the ``add_missing`` ones that are not in the index (existing
        ones, maybe claimed with a lease as their score, are left as they are); remove the
        ``remove`` ones. The three must not share members."""
        async with self._redis.pipeline(transaction=False) as pipe:
            count = 0
            for entry in add:
                pipe.zadd(self.shard(entry.customer_id), {entry.member: entry.due})
                count += 1
            for entry in add_missing:
                pipe.zadd(self.shard(entry.customer_id), {entry.member: entry.due}, nx=True)
                count += 1
            for entry in remove:
                pipe.zrem(self.shard(entry.customer_id), entry.member)
                count += 1
            if count:
                await pipe.execute()

    async def claim(self, shard_key: str, now: float, lease: float, limit: int) -> list[TimerEntry]:
        """Take up to ``limit`` due entries of one shard for ``lease`` seconds."""
        call = ScriptCall(_CLAIM, [shard_key], [now, now + lease, limit])
        [raw] = await run_scripts(self._redis, [call])
        entries, junk = _parse(raw)
        await self._drop({shard_key: junk})
        return entries

    async def claim_due(self, now: float, lease: float, limit: int) -> Claim:
        """Take due entries of every shard for ``lease`` seconds, in one pipelined round
        trip: an equal share of ``limit`` per shard (rounded up), so that timer loops running
        side by side split a burst between them instead of one taking it all."""
        share = -(-limit // self.shards)
        calls = [ScriptCall(_CLAIM, [key], [now, now + lease, share]) for key in self.shard_keys()]
        raws = await run_scripts(self._redis, calls)
        parsed = [_parse(raw) for raw in raws]
        await self._drop(
            {key: junk for key, (_, junk) in zip(self.shard_keys(), parsed, strict=True)}
        )
        entries = sorted((e for shard, _ in parsed for e in shard), key=lambda e: e.due)
        return Claim(entries, more_due=any(len(raw) == 2 * share for raw in raws))

    async def _drop(self, junk: dict[str, list[bytes]]) -> None:
        if not any(junk.values()):
            return
        log.error("dropping timer entries that are not text: %s", junk)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in junk.items():
                if members:
                    pipe.zrem(key, *members)
            await pipe.execute()

    async def pending(self) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self.shard_keys():
                pipe.zcard(key)
            return sum(await pipe.execute())
