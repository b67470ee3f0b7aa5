"""Lua scripts sent in pipelines by their SHA alone.

redis-py asks Redis which scripts it knows (``SCRIPT EXISTS``) before every pipeline that
holds one: a second round trip for each batch the events loop stores and each claim of the
timer loop. Here a pipeline sends only ``EVALSHA``; when Redis has forgotten a script (it
restarted, or its script cache was flushed) those calls answer ``NOSCRIPT`` without running,
and just they are sent again once the script is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float


class LuaScript:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # the name Redis gives it


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Arg]


async def run_scripts(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run the calls in one pipelined round trip (two after Redis forgot a script); the
    results in order. A call's error is raised, as a pipeline would."""
    results = await _pipeline(redis, calls)
    forgotten = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if forgotten:
        for source in {calls[i].script.source for i in forgotten}:
            await redis.script_load(source)
        again = await _pipeline(redis, [calls[i] for i in forgotten])
        for i, result in zip(forgotten, again, strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


async def _pipeline(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    if not calls:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))
