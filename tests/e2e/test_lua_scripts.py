"""Scripts go by SHA alone and survive Redis forgetting them (a restart flushes the cache)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.orchestrator.lua_scripts import LuaScript, ScriptCall, run_scripts
from services.orchestrator.profile_store import ProfileStore
from shared.customer_keys import CustomerKeys
from shared.profile import Profile
from shared.settings import Settings

pytestmark = pytest.mark.timeout(30)


async def test_scripts_run_again_after_redis_forgets_them(settings: Settings) -> None:
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        store = ProfileStore(redis, CustomerKeys(f"lua-{uuid.uuid4().hex[:6]}"))
        assert await store.save_many([(Profile(id="a"), 0), (Profile(id="b"), 0)]) == [True] * 2
        await redis.script_flush()
        # One write with a stale version among them: only that one is refused.
        saved = await store.save_many([(Profile(id="a"), 1), (Profile(id="b"), 0)])
        assert saved == [True, False]
        assert {k: v.version for k, v in (await store.load_many(["a", "b"])).items()} == {
            "a": 2,
            "b": 1,
        }
    finally:
        await redis.aclose()


async def test_a_script_error_is_raised(settings: Settings) -> None:
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        failing = LuaScript(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
        key = f"lua-{uuid.uuid4().hex[:6]}:not-a-number"
        await redis.set(key, "x")
        with pytest.raises(ResponseError, match="not an integer"):
            await run_scripts(redis, [ScriptCall(failing, [key], [])])
    finally:
        await redis.aclose()
