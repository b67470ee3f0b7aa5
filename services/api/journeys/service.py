"""Journeys: keyword-only service functions that receive the session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.db.base import utcnow
from services.api.journeys.models import JourneyRow
from shared.definition_checks import check_journey
from shared.definitions import Journey


async def list_journeys(*, session: AsyncSession) -> list[JourneyRow]:
    return list(await session.scalars(select(JourneyRow).order_by(JourneyRow.created_at)))


async def get_journey(*, session: AsyncSession, key: str) -> JourneyRow | None:
    return await session.get(JourneyRow, key)


async def save_journey(*, session: AsyncSession, journey: Journey) -> tuple[JourneyRow, bool]:
    """Create or replace; returns the row and whether it was created."""
    check_journey(journey)
    definition = journey.model_dump(mode="json", by_alias=True, exclude_none=True)
    row = await session.get(JourneyRow, journey.key, with_for_update=True)
    if row is None:
        row = JourneyRow(key=journey.key, definition=definition, version=1)
        session.add(row)
        await session.flush()
        return row, True
    row.definition = definition
    row.version += 1
    row.updated_at = utcnow()
    await session.flush()
    return row, False


async def delete_journey(*, session: AsyncSession, key: str) -> bool:
    row = await session.get(JourneyRow, key)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True
