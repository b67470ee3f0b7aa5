"""HTTP routes for journey and rule analytics, on the journeys' and rules' own paths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.api.analytics import service
from services.api.analytics.models import FunnelOut, PathsOut, RuleStatsOut
from services.api.deps import SessionDep, Viewer
from services.api.journeys.service import get_journey
from shared.definitions import Journey
from shared.http import ApiError

router = APIRouter(prefix="/v1", tags=["analytics"])

Since = Annotated[
    datetime | None,
    Query(
        description="Start of the range, ISO-8601 (inclusive; UTC when no offset). "
        "Default: all recorded history"
    ),
]
Until = Annotated[
    datetime | None,
    Query(description="End of the range, ISO-8601 (exclusive; UTC when no offset). Default: now"),
]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime]:
    """The range as aware datetimes; refuses an empty or inverted one."""
    end = _utc(until) if until is not None else datetime.now(UTC)
    start = _utc(since) if since is not None else None
    if start is not None and start >= end:
        raise ApiError(422, "invalid", f"since ({start.isoformat()}) must be before until")
    return start, end


async def _journey(session: SessionDep, key: str) -> Journey:
    row = await get_journey(session=session, key=key)
    if row is None:
        raise ApiError(404, "not_found", f"no journey {key!r}")
    return Journey.model_validate(row.definition)


@router.get("/journeys/{key}/funnel", summary="Funnel of a journey over a time range")
async def get_funnel(
    key: str, session: SessionDep, _: Viewer, since: Since = None, until: Until = None
) -> FunnelOut:
    """Per stage: customers who reached it (or a later one), now in it, conversion from the
    previous stage, drop-off, and median / p90 time from the stage they came from."""
    start, end = window(since, until)
    journey = await _journey(session, key)
    return await service.funnel(
        session=session,
        journey=key,
        stages=[stage.key for stage in journey.stages],
        since=start,
        until=end,
    )


@router.get("/journeys/{key}/paths", summary="Observed moves of a journey, with counts")
async def get_paths(
    key: str,
    session: SessionDep,
    _: Viewer,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Whole paths to list")] = 20,
) -> PathsOut:
    """Every move customers made (entries, forward moves, skips, backward moves) and the
    most frequent whole paths."""
    start, end = window(since, until)
    await _journey(session, key)
    return await service.paths(session=session, journey=key, since=start, until=end, limit=limit)


@router.get("/rules/{key}/stats", summary="Decisions, deliveries, conversions and uplift")
async def get_rule_stats(
    key: str, session: SessionDep, _: Viewer, since: Since = None, until: Until = None
) -> RuleStatsOut:
    """Counts from the rule's recorded history; a rule with no history has all zeros."""
    start, end = window(since, until)
    return await service.rule_stats(session=session, rule=key, since=start, until=end)
