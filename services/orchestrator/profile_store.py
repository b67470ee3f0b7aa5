"""Customer profiles in Redis, written with compare-and-set so a replay changes nothing.

A profile that does not read back (no writer of Safar's makes one) is moved aside (to
``CustomerKeys.unreadable_profile``, in the same slot), and the customer starts afresh: the loops go
on instead of failing on it at every restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from services.orchestrator.lua_scripts import LuaScript, ScriptCall, run_scripts
from shared.customer_keys import CustomerKeys
from shared.profile import Profile

log = logging.getLogger(__name__)

# KEYS[1] profile hash; ARGV: expected version, profile JSON, new version.
_COMPARE_AND_SET = LuaScript("""
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[2], 'v', ARGV[3])
return 1
""")

# KEYS[1] profile hash, KEYS[2] where an unreadable one goes; ARGV: its p and v as read
# (v: '' when absent). Moves it only if unchanged.
_SET_ASIDE = LuaScript("""
local p = redis.call('HGET', KEYS[1], 'p')
local v = redis.call('HGET', KEYS[1], 'v') or ''
if p ~= ARGV[1] or v ~= ARGV[2] then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
""")

# KEYS[1] profile hash; ARGV: expected version. Deletes only an unchanged profile.
_COMPARE_AND_DELETE = LuaScript("""
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '0') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
""")


@dataclass(slots=True)
class Stored:
    profile: Profile | None
    version: int


class ProfileStore:
    def __init__(self, redis: Redis, keys: CustomerKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        """Profiles and their versions, in one round trip (and one more to set aside those
        that do not read)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                pipe.hmget(self._keys.profile(customer_id), "p", "v")
            rows = await pipe.execute()
        return await self._read(dict(zip(customer_ids, rows, strict=True)))

    async def _read(self, rows: dict[str, tuple[bytes | None, bytes | None]]) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        unreadable: dict[str, tuple[bytes, bytes]] = {}
        for customer_id, (raw, version) in rows.items():
            try:
                found[customer_id] = Stored(
                    None if raw is None else Profile.from_json(raw), int(version or 0)
                )
            except ValueError as exc:  # ProfileDecodeError, or a version that is no number
                log.error("the profile of %r does not read (%s); set aside", customer_id, exc)
                unreadable[customer_id] = (raw or b"", version or b"")
        if unreadable:
            calls = [
                ScriptCall(
                    _SET_ASIDE,
                    [self._keys.profile(customer_id), self._keys.unreadable_profile(customer_id)],
                    list(read),
                )
                for customer_id, read in unreadable.items()
            ]
            await run_scripts(self._redis, calls)
            # Set aside, or changed meanwhile: read again either way.
            found.update(await self.load_many(list(unreadable)))
        return found

    async def refresh(
        self, customer_ids: Sequence[str], held: Mapping[str, int]
    ) -> dict[str, Stored | None]:
        """Like :meth:`load_many`, but a customer whose profile the caller holds at the
        version Redis still has comes back as None, without the profile being sent: one
        round trip reads the held versions and the other profiles, a second (only when one
        moved) the profiles whose version moved."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                key = self._keys.profile(customer_id)
                if customer_id in held:
                    pipe.hget(key, "v")
                else:
                    pipe.hmget(key, "p", "v")
            rows = await pipe.execute()
        found: dict[str, Stored | None] = {}
        moved, read = [], {}
        for customer_id, row in zip(customer_ids, rows, strict=True):
            if customer_id not in held:
                read[customer_id] = row
            elif row == str(held[customer_id]).encode():
                found[customer_id] = None
            else:
                moved.append(customer_id)
        found.update(await self._read(read))
        if moved:
            found.update(await self.load_many(moved))
        return found

    async def save_many(self, writes: Sequence[tuple[Profile, int]]) -> list[bool]:
        """Write each profile if its version is unchanged; False where another writer won."""
        calls = [
            ScriptCall(
                _COMPARE_AND_SET,
                [self._keys.profile(profile.id)],
                [version, profile.to_json(), version + 1],
            )
            for profile, version in writes
        ]
        return [bool(r) for r in await run_scripts(self._redis, calls)]

    async def delete_many(self, profiles: Sequence[tuple[str, int]]) -> None:
        """Delete merged anonymous profiles, unless they changed since they were read."""
        calls = [
            ScriptCall(_COMPARE_AND_DELETE, [self._keys.profile(customer_id)], [version])
            for customer_id, version in profiles
        ]
        await run_scripts(self._redis, calls)
