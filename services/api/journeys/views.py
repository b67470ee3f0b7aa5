"""HTTP routes for journeys."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.api.config.service import lock_configuration, record_changes
from services.api.deps import Editor, PublisherDep, SessionDep, Viewer
from services.api.journeys import service
from services.api.journeys.models import JourneyRow
from shared.definitions import Journey
from shared.http import ApiError

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


class JourneyIn(Journey):
    """A journey as marketing-ops write it (DESIGN §6): ordered stages, each with a CEL
    ``when``; a customer moves to the last stage whose ``when`` holds."""


class JourneyOut(BaseModel):
    key: str
    version: int
    created_at: datetime
    updated_at: datetime
    definition: Journey

    @classmethod
    def of(cls, row: JourneyRow) -> JourneyOut:
        return cls(
            key=row.key,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            definition=Journey.model_validate(row.definition),
        )


def _not_found(key: str) -> ApiError:
    return ApiError(404, "not_found", f"no journey {key!r}")


@router.get("", response_model_exclude_none=True, summary="List journeys")
async def list_journeys(session: SessionDep, _: Viewer) -> list[JourneyOut]:
    return [JourneyOut.of(row) for row in await service.list_journeys(session=session)]


@router.get("/{key}", response_model_exclude_none=True, summary="One journey")
async def get_journey(key: str, session: SessionDep, _: Viewer) -> JourneyOut:
    row = await service.get_journey(session=session, key=key)
    if row is None:
        raise _not_found(key)
    return JourneyOut.of(row)


@router.post("", response_model_exclude_none=True, status_code=201, summary="Create a journey")
async def create_journey(
    journey: JourneyIn, session: SessionDep, who: Editor, publisher: PublisherDep
) -> JourneyOut:
    async with session.begin():
        await lock_configuration(session=session)
        if await service.get_journey(session=session, key=journey.key) is not None:
            raise ApiError(409, "conflict", f"journey {journey.key!r} exists; PUT replaces it")
        row, change = await service.save_journey(session=session, journey=journey)
        await record_changes(session=session, actor=who.name, changes=[change])
    await publisher.publish()
    return JourneyOut.of(row)


@router.put(
    "/{key}",
    response_model_exclude_none=True,
    summary="Create or replace a journey",
    description="201 when created, 200 when replaced or unchanged. Removing a stage that "
    "rules are triggered by is a 409.",
)
async def put_journey(
    key: str,
    journey: JourneyIn,
    session: SessionDep,
    who: Editor,
    publisher: PublisherDep,
    response: Response,
) -> JourneyOut:
    if journey.key != key:
        raise ApiError(422, "invalid", f"key: the body's key {journey.key!r} differs from {key!r}")
    async with session.begin():
        await lock_configuration(session=session)
        row, change = await service.save_journey(session=session, journey=journey)
        version = await record_changes(session=session, actor=who.name, changes=[change])
    if version is not None:
        await publisher.publish()
    response.status_code = 201 if change is not None and change.action == "create" else 200
    return JourneyOut.of(row)


@router.delete(
    "/{key}",
    status_code=204,
    summary="Delete a journey",
    description="A journey that rules are triggered by cannot be deleted (409).",
)
async def delete_journey(
    key: str, session: SessionDep, who: Editor, publisher: PublisherDep
) -> Response:
    async with session.begin():
        await lock_configuration(session=session)
        change = await service.delete_journey(session=session, key=key)
        if change is None:
            raise _not_found(key)
        await record_changes(session=session, actor=who.name, changes=[change])
    await publisher.publish()
    return Response(status_code=204)
