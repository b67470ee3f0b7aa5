"""Customer state (Redis), history (PostgreSQL), actions, and erasure."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from redis.exceptions import RedisError

from services.api import metrics
from services.api.audit import service as audit_log
from services.api.customers import service
from services.api.customers.models import ActionOut, ErasureOut, TimelineOut
from services.api.deps import Admin, KeysDep, RedisDep, SessionDep, SettingsDep, Viewer
from services.api.history.records import ActionStatus
from services.api.history.service import erase_history
from shared.http import ApiError
from shared.profile import Profile, ProfileDecodeError

router = APIRouter(prefix="/v1/customers", tags=["customers"])
actions_router = APIRouter(prefix="/v1/actions", tags=["customers"])

audit = logging.getLogger("safar.audit")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


# Before the profile route: a customer id may hold "/", and "{id}/timeline" is this one.
@router.get("/{customer_id:path}/timeline", summary="Events, moves, decisions and deliveries")
async def get_timeline(
    customer_id: str,
    session: SessionDep,
    _: Viewer,
    since: Annotated[datetime | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> TimelineOut:
    """Everything recorded about the customer, oldest first: events, stage transitions,
    rule decisions, delivery attempts with their outcome, and conversions."""
    items, truncated = await service.timeline(
        session=session,
        customer_id=customer_id,
        since=_utc(since),
        until=_utc(until),
        limit=limit,
    )
    return TimelineOut(customer_id=customer_id, items=items, truncated=truncated)


@router.get("/{customer_id:path}", summary="Profile, stage per journey, pending waits")
async def get_customer(
    customer_id: str, redis: RedisDep, keys: KeysDep, _: Viewer
) -> dict[str, Any]:
    """The profile as the orchestrator keeps it; an anonymous id linked to a known customer
    shows that customer. ``waits`` lists pending waits (rule, key, due), soonest first."""
    raw = await redis.hget(keys.profile(customer_id), "p")
    if raw is None:
        linked = await redis.get(keys.identity(customer_id))
        if linked is not None:
            raw = await redis.hget(keys.profile(_text(linked)), "p")
    if raw is None:
        raise ApiError(404, "not_found", f"no customer {customer_id!r}")
    try:
        profile = Profile.from_json(raw)
    except ProfileDecodeError:
        raise ApiError(
            500,
            "unreadable_profile",
            "the stored profile does not read; the orchestrator sets it aside when the "
            "customer is next touched",
        ) from None
    return profile.view() | {"waits": profile.waits_view()}


@router.delete("/{customer_id:path}", summary="Erase a customer everywhere (idempotent)")
async def erase_customer(
    customer_id: str,
    session: SessionDep,
    redis: RedisDep,
    keys: KeysDep,
    settings: SettingsDep,
    who: Admin,
) -> ErasureOut:
    """Deletes the customer's Redis keys (profile, stages, waits, identity links, and those
    of anonymous ids linked to them) and their history in PostgreSQL. History produced
    before the erasure that arrives later is dropped by the recorder."""
    erased_at = datetime.now(UTC)
    try:
        async with session.begin():
            linked = await service.linked_ids(
                session=session, redis=redis, keys=keys, customer_id=customer_id
            )
            everyone = {customer_id} | linked
            rows = await erase_history(session=session, customer_ids=everyone, at=erased_at)
        redis_keys = await service.erase_redis(
            redis=redis,
            keys=keys,
            customer_ids=everyone,
            timer_shards=settings.timer_shards,
        )
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "unavailable", f"Redis is unavailable ({exc}); the erasure is safe to repeat"
        ) from exc
    # The audit log proves the erasure without keeping the id: its key is a digest that
    # someone who knows the id can recompute (`erasure_reference`).
    async with session.begin():
        await audit_log.record(
            session=session,
            actor=who.name,
            changes=[
                audit_log.Change(
                    "customer",
                    service.erasure_reference(customer_id),
                    "erase",
                    after={
                        "linked_ids": len(linked),
                        "redis_keys": redis_keys,
                        "rows": sum(rows.values()),
                    },
                )
            ],
            config_version=None,
        )
    metrics.ERASURES.inc()
    # The log names the customer as the audit record does: by digest, never by id.
    reference = service.erasure_reference(customer_id)
    audit.info(
        "customer erased: %s by %s (%d linked ids; %d Redis keys, %d rows deleted)",
        reference,
        who.name,
        len(linked),
        redis_keys,
        sum(rows.values()),
        extra={
            "audit": "customer_erased",
            "actor": who.name,
            "customer": reference,
            "linked_ids": len(linked),
            "redis_keys": redis_keys,
            "rows": sum(rows.values()),
        },
    )
    return ErasureOut(
        customer_id=customer_id,
        erased_at=erased_at,
        linked_ids=sorted(linked),
        redis_keys=redis_keys,
        rows=rows,
    )


@actions_router.get("", summary="Actions with their latest delivery status")
async def list_actions(
    session: SessionDep,
    _: Viewer,
    customer_id: str | None = None,
    rule: str | None = None,
    status: ActionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> list[ActionOut]:
    """One row per action (``action_id`` is its dedupe key), most recently changed first.
    ``status``: pending (fired, not delivered yet), retrying, sent, failed, held_out,
    suppressed."""
    rows = await service.list_actions(
        session=session,
        customer_id=customer_id,
        rule=rule,
        status=status,
        limit=limit,
        offset=offset,
    )
    return [ActionOut.model_validate(row) for row in rows]
