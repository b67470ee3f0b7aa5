"""anonymousId -> userId links, recorded on identify/alias and applied to later events."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.customer_keys import CustomerKeys
from shared.events import Event

log = logging.getLogger(__name__)


class IdentityLinks:
    """Best effort: when Redis is down events keep their own ids, and the orchestrator
    still merges profiles from the identify/alias events themselves."""

    def __init__(self, redis: Redis, keys: CustomerKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def resolve(self, events: Sequence[Event]) -> None:
        """Key events that carry only a linked anonymousId by its userId, in place."""
        anonymous = [e for e in events if e.user_id is None and e.anonymous_id]
        # One write per anonymousId, the request's last link winning (a batch repeats them).
        known: dict[str, str] = {}
        for e in events:
            if e.user_id and e.anonymous_id:
                known[e.anonymous_id] = e.user_id
            if e.type == "alias" and e.previous_id and e.user_id:
                known[e.previous_id] = e.user_id
        try:
            if known:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for anonymous_id, user_id in known.items():
                        pipe.set(self._keys.identity(anonymous_id), user_id)
                    await pipe.execute()
            if not anonymous:
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in anonymous:
                    pipe.get(self._keys.identity(str(event.anonymous_id)))
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("identity links unavailable (%s); events keep their own ids", exc)
            return
        for event, user_id in zip(anonymous, found, strict=True):
            linked = known.get(str(event.anonymous_id)) or (user_id.decode() if user_id else None)
            if linked:
                event.user_id = linked
                event.customer_id = linked
