"""Customers: timeline, actions and erasure. Keyword-only functions receiving their clients."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.customers.models import (
    ActionItem,
    ConversionItem,
    EventItem,
    RuleItem,
    TimelineItem,
    TransitionItem,
)
from services.api.history.models import (
    ActionAttemptRow,
    ActionRow,
    ConversionRow,
    EventArchiveRow,
    RuleOutcomeRow,
    TransitionRow,
)
from shared.customer_keys import CustomerKeys
from shared.dispatch_keys import DispatchKeys

_SCAN_COUNT = 1000
_UNLINK_BATCH = 500
# At one instant, causes come before effects.
_KIND_ORDER = {"event": 0, "transition": 1, "rule": 2, "action": 3, "conversion": 4}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def erasure_reference(customer_id: str) -> str:
    """How the audit log names an erased customer: a digest, not the id itself."""
    return "sha256:" + hashlib.sha256(customer_id.encode()).hexdigest()


async def timeline(
    *,
    session: AsyncSession,
    customer_id: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> tuple[list[TimelineItem], bool]:
    """The customer's events, moves, rule decisions, delivery attempts and conversions,
    oldest first; also whether more items follow."""

    def window(model: Any) -> Any:
        query = select(model).where(model.customer_id == customer_id)
        if since is not None:
            query = query.where(model.at >= since)
        if until is not None:
            query = query.where(model.at < until)
        return query.order_by(model.at).limit(limit + 1)

    items: list[TimelineItem] = []
    for row in await session.scalars(window(EventArchiveRow)):
        items.append(
            EventItem(
                id=row.id,
                at=row.at,
                event_id=row.event_id,
                type=row.type,
                name=row.name,
                event=row.payload,
            )
        )
    for row in await session.scalars(window(TransitionRow).order_by(TransitionRow.seq)):
        items.append(
            TransitionItem(
                id=row.id,
                at=row.at,
                journey=row.journey,
                from_stage=row.from_stage,
                to_stage=row.to_stage,
                move=row.move,
                event_id=row.event_id,
            )
        )
    for row in await session.scalars(window(RuleOutcomeRow)):
        items.append(
            RuleItem(
                id=row.id,
                at=row.at,
                rule=row.rule,
                rule_version=row.rule_version,
                outcome=row.outcome,
                action_id=row.action_id,
                detail=row.detail,
            )
        )
    for row in await session.scalars(window(ActionAttemptRow).order_by(ActionAttemptRow.attempt)):
        items.append(
            ActionItem(
                id=row.id,
                at=row.at,
                action_id=row.action_id,
                rule=row.rule,
                channel=row.channel,
                status=row.status,
                attempt=row.attempt,
                status_code=row.status_code,
                error=row.error,
            )
        )
    for row in await session.scalars(window(ConversionRow)):
        items.append(
            ConversionItem(
                id=row.id,
                at=row.at,
                rule=row.rule,
                action_id=row.action_id,
                group=row.group_name,
            )
        )
    # Stable: rows of one kind keep their query order (transitions by insertion).
    items.sort(key=lambda item: (item.at, _KIND_ORDER[item.kind]))
    return items[:limit], len(items) > limit


async def list_actions(
    *,
    session: AsyncSession,
    customer_id: str | None,
    rule: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> Sequence[ActionRow]:
    """Actions with their latest status, most recently changed first."""
    query = select(ActionRow)
    if customer_id is not None:
        query = query.where(ActionRow.customer_id == customer_id)
    if rule is not None:
        query = query.where(ActionRow.rule == rule)
    if status is not None:
        query = query.where(ActionRow.status == status)
    query = query.order_by(ActionRow.updated_at.desc(), ActionRow.action_id)
    return (await session.scalars(query.limit(limit).offset(offset))).all()


async def linked_ids(
    *, session: AsyncSession, redis: Redis, keys: CustomerKeys, customer_id: str
) -> set[str]:
    """Anonymous ids that lead to this customer: identity links pointing at it, ids merged
    into its profile, and the anonymous ids on its archived events."""
    found: set[str] = set()
    raw = await redis.hget(keys.profile(customer_id), "p")
    if raw is not None:
        merged = orjson.loads(raw).get("merged") or []
        found.update(str(anonymous_id) for anonymous_id in merged)
    archived = await session.scalars(
        text(
            "SELECT DISTINCT payload->>'anonymous_id' FROM history_events "
            "WHERE customer_id = :customer AND payload->>'anonymous_id' IS NOT NULL"
        ),
        {"customer": customer_id},
    )
    found.update(archived)
    found.update(await _links_to(redis=redis, keys=keys, customer_id=customer_id))
    found.discard(customer_id)
    return found


async def _links_to(*, redis: Redis, keys: CustomerKeys, customer_id: str) -> set[str]:
    """Anonymous ids whose identity link points at the customer (a sweep of the links)."""
    prefix, suffix = keys.identity("\x00").split("\x00")
    linked: set[str] = set()
    batch: list[bytes] = []

    async def check() -> None:
        values = await redis.mget(batch)
        for key, value in zip(batch, values, strict=True):
            if value is not None and _text(value) == customer_id:
                linked.add(_text(key)[len(prefix) : -len(suffix)])
        batch.clear()

    async for key in redis.scan_iter(match=keys.identity("*"), count=_SCAN_COUNT):
        batch.append(key)
        if len(batch) >= _UNLINK_BATCH:
            await check()
    if batch:
        await check()
    return linked


async def erase_redis(
    *, redis: Redis, keys: CustomerKeys, customer_ids: set[str], timer_shards: int
) -> int:
    """Delete these customers' keys, and their entries in the timer index (which name the
    customer); returns how many keys went."""
    await _erase_timers(redis, keys, customer_ids, timer_shards)
    deleted = 0
    for customer_id in sorted(customer_ids):
        # By name, not by a pattern on the hash tag: other keys share that shape (the
        # dispatcher's per-action and retry keys), and a SCAN would read the whole keyspace.
        deleted += int(await redis.unlink(*keys.of_customer(customer_id)))
    await _erase_retries(redis, DispatchKeys(keys.namespace), customer_ids)
    return deleted


async def _erase_timers(
    redis: Redis, keys: CustomerKeys, customer_ids: set[str], timer_shards: int
) -> None:
    """Every entry of theirs in the timer index, also one whose wait the profile no longer
    holds (the timer loop drops such entries only once they fall due): each shard holding
    any of them is scanned once."""
    by_shard: dict[str, set[str]] = {}
    for customer_id in customer_ids:
        by_shard.setdefault(keys.timer_shard(customer_id, timer_shards), set()).add(customer_id)
    for shard, theirs in sorted(by_shard.items()):
        # One customer: only their members are read; several: the shard, filtered here.
        match = keys.timer_members_of(next(iter(theirs))) if len(theirs) == 1 else None
        members = [
            member
            async for member, _ in redis.zscan_iter(shard, match=match, count=_SCAN_COUNT)
            if CustomerKeys.parse_timer_member(member.decode(errors="replace"))[0] in theirs
        ]
        if members:
            await redis.zrem(shard, *members)


async def _erase_retries(redis: Redis, dispatch: DispatchKeys, customer_ids: set[str]) -> None:
    """Unschedule the customers' actions waiting for a retry: each holds their profile as it
    was, and would still be sent."""
    theirs = []
    async for action_id, raw in redis.hscan_iter(dispatch.retry_actions, count=_SCAN_COUNT):
        try:
            customer = orjson.loads(raw).get("customer_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue  # the dispatcher dead-letters what does not decode
        if customer in customer_ids:
            theirs.append(action_id)
    if theirs:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zrem(dispatch.retry_due, *theirs)
            pipe.hdel(dispatch.retry_actions, *theirs)
            await pipe.execute()
