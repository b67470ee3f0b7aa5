"""HTTP routes for write keys (sources) and API keys; admin only. A key is shown once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from services.api.access import service
from services.api.access.models import ApiKeyRow, SourceRow
from services.api.access.service import Role
from services.api.audit import service as audit
from services.api.audit.service import Change
from services.api.config.service import record_changes
from services.api.deps import Admin, PublisherDep, SessionDep
from shared.http import ApiError

router = APIRouter(prefix="/v1", tags=["access"])


class SourceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SourceOut(BaseModel):
    id: uuid.UUID
    name: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: SourceRow) -> SourceOut:
        return cls.model_validate(row, from_attributes=True)


class SourceCreated(SourceOut):
    write_key: str = Field(description="Shown once; store it in your tracking SDK's config")


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> ApiKeyOut:
        return cls.model_validate(row, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once: send it as `Authorization: Bearer <key>`")


# What the audit log keeps of a credential: viewers read the log, so no part of the key.
def _source_summary(row: SourceRow) -> dict[str, Any]:
    return {"name": row.name}


def _key_summary(row: ApiKeyRow) -> dict[str, Any]:
    return {"name": row.name, "role": row.role}


@router.post("/sources", status_code=201, summary="Create a source and its write key")
async def create_source(
    body: SourceIn, session: SessionDep, who: Admin, publisher: PublisherDep
) -> SourceCreated:
    async with session.begin():
        row, key = await service.create_source(session=session, name=body.name)
        change = Change("source", str(row.id), "create", None, _source_summary(row))
        await record_changes(session=session, actor=who.name, changes=[change])
    await publisher.publish()
    return SourceCreated(**SourceOut.of(row).model_dump(), write_key=key)


@router.get("/sources", summary="List sources (keys are never shown again)")
async def list_sources(session: SessionDep, _: Admin) -> list[SourceOut]:
    return [SourceOut.of(row) for row in await service.list_sources(session=session)]


@router.delete("/sources/{source_id}", status_code=204, summary="Revoke a source's write key")
async def revoke_source(
    source_id: uuid.UUID, session: SessionDep, who: Admin, publisher: PublisherDep
) -> Response:
    async with session.begin():
        row, revoked = await service.revoke_source(session=session, source_id=source_id)
        if row is None:
            raise ApiError(404, "not_found", f"no source {source_id}")
        if revoked:  # revoking again changes nothing: no audit entry, no new configuration
            change = Change("source", str(row.id), "revoke", _source_summary(row), None)
            await record_changes(session=session, actor=who.name, changes=[change])
    if revoked:
        await publisher.publish()
    return Response(status_code=204)


@router.post("/api-keys", status_code=201, summary="Create an API key with a role")
async def create_api_key(body: ApiKeyIn, session: SessionDep, who: Admin) -> ApiKeyCreated:
    async with session.begin():
        row, key = await service.create_api_key(session=session, name=body.name, role=body.role)
        change = Change("api_key", str(row.id), "create", None, _key_summary(row))
        await audit.record(session=session, actor=who.name, changes=[change], config_version=None)
    return ApiKeyCreated(**ApiKeyOut.of(row).model_dump(), api_key=key)


@router.get("/api-keys", summary="List API keys")
async def list_api_keys(session: SessionDep, _: Admin) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(row) for row in await service.list_api_keys(session=session)]


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep, who: Admin) -> Response:
    async with session.begin():
        row, revoked = await service.revoke_api_key(session=session, key_id=key_id)
        if row is None:
            raise ApiError(404, "not_found", f"no API key {key_id}")
        if revoked:  # revoking again changes nothing and is not audited again
            change = Change("api_key", str(row.id), "revoke", _key_summary(row), None)
            await audit.record(
                session=session, actor=who.name, changes=[change], config_version=None
            )
    return Response(status_code=204)
