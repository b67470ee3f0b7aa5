"""HTTP routes for journeys."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.api.config.publisher import record_change
from services.api.deps import Editor, PublisherDep, SessionDep, Viewer
from services.api.journeys import service
from services.api.journeys.models import JourneyRow
from shared.definitions import Journey
from shared.http import ApiError

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


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


@router.get("", summary="List journeys")
async def list_journeys(session: SessionDep, _: Viewer) -> list[JourneyOut]:
    return [JourneyOut.of(row) for row in await service.list_journeys(session=session)]


@router.get("/{key}", summary="One journey")
async def get_journey(key: str, session: SessionDep, _: Viewer) -> JourneyOut:
    row = await service.get_journey(session=session, key=key)
    if row is None:
        raise _not_found(key)
    return JourneyOut.of(row)


@router.post("", status_code=201, summary="Create a journey")
async def create_journey(
    journey: Journey, session: SessionDep, who: Editor, publisher: PublisherDep
) -> JourneyOut:
    async with session.begin():
        if await service.get_journey(session=session, key=journey.key) is not None:
            raise ApiError(409, "conflict", f"journey {journey.key!r} exists; PUT replaces it")
        row, _ = await service.save_journey(session=session, journey=journey)
        await record_change(session=session, actor=who.name, summary=f"create journey {row.key}")
    await publisher.publish()
    return JourneyOut.of(row)


@router.put("/{key}", summary="Create or replace a journey")
async def put_journey(
    key: str,
    journey: Journey,
    session: SessionDep,
    who: Editor,
    publisher: PublisherDep,
    response: Response,
) -> JourneyOut:
    if journey.key != key:
        raise ApiError(422, "invalid", f"the body's key {journey.key!r} differs from {key!r}")
    async with session.begin():
        row, created = await service.save_journey(session=session, journey=journey)
        await record_change(session=session, actor=who.name, summary=f"put journey {key}")
    await publisher.publish()
    response.status_code = 201 if created else 200
    return JourneyOut.of(row)


@router.delete("/{key}", status_code=204, summary="Delete a journey")
async def delete_journey(
    key: str, session: SessionDep, who: Editor, publisher: PublisherDep
) -> Response:
    async with session.begin():
        if not await service.delete_journey(session=session, key=key):
            raise _not_found(key)
        await record_change(session=session, actor=who.name, summary=f"delete journey {key}")
    await publisher.publish()
    return Response(status_code=204)
