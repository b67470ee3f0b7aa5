"""Journeys: keyword-only service functions that receive the session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.audit.service import Change
from services.api.config.exceptions import InUse
from services.api.db.base import utcnow
from services.api.journeys.models import JourneyRow
from services.api.rules.service import rules_naming
from shared.definition_checks import check_journey
from shared.definitions import Journey


async def list_journeys(*, session: AsyncSession) -> list[JourneyRow]:
    return list(await session.scalars(select(JourneyRow).order_by(JourneyRow.created_at)))


async def get_journey(*, session: AsyncSession, key: str) -> JourneyRow | None:
    return await session.get(JourneyRow, key)


async def save_journey(
    *, session: AsyncSession, journey: Journey, references_checked: bool = False
) -> tuple[JourneyRow, Change | None]:
    """Create or replace after every check; ``None`` as the change when nothing changed.

    A stage that rules are triggered by cannot be removed (409) unless the caller checked
    the whole configuration (``references_checked``, config apply).
    """
    check_journey(journey)
    document = journey.document()
    row = await session.get(JourneyRow, journey.key, with_for_update=True)
    if row is None:
        row = JourneyRow(key=journey.key, definition=document, version=1)
        session.add(row)
        await session.flush()
        return row, Change("journey", journey.key, "create", None, document)
    before = Journey.model_validate(row.definition)
    if before.document() == document:
        return row, None
    if not references_checked:
        removed = {s.key for s in before.stages} - {s.key for s in journey.stages}
        users = await rules_naming(session=session, journey=journey.key, stages=removed)
        if users:
            raise InUse(
                f"stages {', '.join(sorted(removed))} of journey {journey.key!r} trigger "
                f"rules {', '.join(users)}; change or delete those rules first"
            )
    row.definition = document
    row.version += 1
    row.updated_at = utcnow()
    await session.flush()
    return row, Change("journey", journey.key, "update", before.document(), document)


async def delete_journey(
    *, session: AsyncSession, key: str, references_checked: bool = False
) -> Change | None:
    """Delete a journey no rule names (else 409); ``None`` when there is no such journey."""
    row = await session.get(JourneyRow, key, with_for_update=True)
    if row is None:
        return None
    if not references_checked:
        users = await rules_naming(session=session, journey=key)
        if users:
            raise InUse(
                f"journey {key!r} triggers rules {', '.join(users)}; "
                "change or delete those rules first"
            )
    before = Journey.model_validate(row.definition).document()
    await session.delete(row)
    await session.flush()
    return Change("journey", key, "delete", before, None)
