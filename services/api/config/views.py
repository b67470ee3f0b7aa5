"""HTTP routes for the configuration as a whole: apply a bundle, export it, its versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from services.api.config import service
from services.api.config.bundle_parser import parse_bundle
from services.api.config.service import ApplyResult
from services.api.deps import Editor, PublisherDep, SessionDep, Viewer
from services.api.redaction import hides_secrets, redact
from shared.definitions import Bundle
from shared.http import ApiError, JsonResponse

router = APIRouter(prefix="/v1/config", tags=["config"])

MAX_BUNDLE_BYTES = 1 << 20


class FieldChangeOut(BaseModel):
    path: str
    before: Any = None
    after: Any = None


class ChangeOut(BaseModel):
    kind: Literal["journey", "rule"]
    key: str
    change: Literal["create", "update", "delete"]
    fields: list[FieldChangeOut]


class ApplyOut(BaseModel):
    dry_run: bool
    config_version: int | None
    changes: list[ChangeOut]
    unchanged: int

    @classmethod
    def of(cls, result: ApplyResult) -> ApplyOut:
        return cls(
            dry_run=result.dry_run,
            config_version=result.config_version,
            changes=[
                ChangeOut(
                    kind=c.kind,
                    key=c.key,
                    change=c.change,
                    fields=[
                        FieldChangeOut(path=f.path, before=f.before, after=f.after)
                        for f in c.fields
                    ],
                )
                for c in result.changes
            ],
            unchanged=result.unchanged,
        )


class ConfigVersionOut(BaseModel):
    version: int
    actor: str
    summary: str
    created_at: datetime


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > MAX_BUNDLE_BYTES:
        raise ApiError(413, "payload_too_large", f"a bundle is at most {MAX_BUNDLE_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BUNDLE_BYTES:
            raise ApiError(
                413, "payload_too_large", f"a bundle is at most {MAX_BUNDLE_BYTES} bytes"
            )
    return bytes(body)


_BUNDLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"$ref": "#/components/schemas/Bundle"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Bundle"}},
        },
    }
}


@router.post(
    "/apply",
    summary="Replace the whole configuration with a bundle",
    description="The bundle (YAML, or JSON with a JSON content type) becomes the whole "
    "configuration: journeys and rules it does not name are deleted. Everything is checked "
    "first and applied in one transaction as one configuration version, published once. "
    "`?dry_run=true` returns the same diff and changes nothing.",
    openapi_extra=_BUNDLE_BODY,
)
async def apply_bundle(
    request: Request,
    session: SessionDep,
    who: Editor,
    publisher: PublisherDep,
    dry_run: bool = False,
) -> ApplyOut:
    bundle = parse_bundle(await _read_body(request), request.headers.get("content-type", ""))
    async with session.begin():
        result = await service.apply_bundle(
            session=session, bundle=bundle, actor=who.name, dry_run=dry_run
        )
    if result.config_version is not None:
        await publisher.publish()
    return ApplyOut.of(result)


@router.get(
    "/export",
    summary="The whole configuration as a bundle",
    description="Journeys and rules (disabled ones too), fields at their defaults left out. "
    "Applying the export changes nothing.",
    response_model=Bundle,
)
async def export_bundle(session: SessionDep, who: Viewer) -> JsonResponse:
    bundle = await service.current_bundle(session=session)
    exported = bundle.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return JsonResponse(redact(exported) if hides_secrets(who) else exported)


@router.get("/versions", summary="Configuration versions, newest first")
async def list_versions(
    session: SessionDep, _: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ConfigVersionOut]:
    rows = await service.list_versions(session=session, limit=limit)
    return [
        ConfigVersionOut(
            version=row.version, actor=row.actor, summary=row.summary, created_at=row.created_at
        )
        for row in rows
    ]
