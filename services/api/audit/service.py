"""Write and read the audit log: keyword-only functions that receive the session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.audit.models import AuditRow

TargetKind = Literal["journey", "rule", "source", "api_key", "bundle", "customer"]
AuditAction = Literal["create", "update", "delete", "enable", "disable", "revoke", "apply", "erase"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one target, as the audit log records it."""

    kind: TargetKind
    key: str
    action: AuditAction
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


async def record(
    *,
    session: AsyncSession,
    actor: str,
    changes: Sequence[Change],
    config_version: int | None,
) -> list[AuditRow]:
    """One audit row per change, in this transaction (so they commit with the change)."""
    rows = [
        AuditRow(
            actor=actor,
            action=change.action,
            target_kind=change.kind,
            target_key=change.key,
            before=change.before,
            after=change.after,
            config_version=config_version,
        )
        for change in changes
    ]
    session.add_all(rows)
    await session.flush()
    return rows


async def list_entries(
    *,
    session: AsyncSession,
    kind: str | None = None,
    key: str | None = None,
    actor: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditRow]:
    """Newest first; ``before_id`` pages back through older entries."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(AuditRow.target_kind == kind)
    if key is not None:
        query = query.where(AuditRow.target_key == key)
    if actor is not None:
        query = query.where(AuditRow.actor == actor)
    if before_id is not None:
        query = query.where(AuditRow.id < before_id)
    return list(await session.scalars(query))
