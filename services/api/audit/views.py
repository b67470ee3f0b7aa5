"""HTTP route for the audit log (read only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from services.api.audit import service
from services.api.audit.service import AuditAction, TargetKind
from services.api.deps import SessionDep, Viewer
from services.api.redaction import hides_secrets, redact

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: AuditAction
    target_kind: TargetKind
    target_key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    config_version: int | None


@router.get("", summary="Who changed what, when (newest first)")
async def list_audit(
    session: SessionDep,
    who: Viewer,
    target_kind: TargetKind | None = None,
    target_key: str | None = None,
    actor: str | None = None,
    before: Annotated[
        int | None,
        Query(ge=-(2**63), le=2**63 - 1, description="Only entries older than this id"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    rows = await service.list_entries(
        session=session,
        kind=target_kind,
        key=target_key,
        actor=actor,
        before_id=before,
        limit=limit,
    )
    entries = [AuditEntryOut.model_validate(row) for row in rows]
    if hides_secrets(who):
        for entry in entries:
            entry.before, entry.after = redact(entry.before), redact(entry.after)
    return entries
