"""Issue, list and revoke write keys and API keys. Keys are shown once and stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.access.models import ApiKeyRow, SourceRow
from services.api.db.base import utcnow
from shared.http import ApiError

Role = Literal["admin", "editor", "viewer"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "editor": 1, "admin": 2}


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


async def create_source(*, session: AsyncSession, name: str) -> tuple[SourceRow, str]:
    key = new_secret("wk")
    row = SourceRow(name=name, key_hash=hash_secret(key), key_prefix=key[:10])
    session.add(row)
    await session.flush()
    return row, key


async def add_source_key(*, session: AsyncSession, name: str, key: str) -> SourceRow:
    """Register a known write key (the dev stack keeps its key across restarts)."""
    existing = await session.scalar(select(SourceRow).where(SourceRow.key_hash == hash_secret(key)))
    if existing is not None:
        return existing
    row = SourceRow(name=name, key_hash=hash_secret(key), key_prefix=key[:10])
    session.add(row)
    await session.flush()
    return row


async def list_sources(*, session: AsyncSession) -> list[SourceRow]:
    return list(await session.scalars(select(SourceRow).order_by(SourceRow.created_at)))


async def revoke_source(
    *, session: AsyncSession, source_id: uuid.UUID
) -> tuple[SourceRow | None, bool]:
    """The row, and whether this call revoked it (False when it was revoked already)."""
    row = await session.get(SourceRow, source_id)
    if row is None or row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    return row, True


async def active_write_key_hashes(*, session: AsyncSession) -> list[str]:
    rows = await session.scalars(select(SourceRow.key_hash).where(SourceRow.revoked_at.is_(None)))
    return sorted(rows)


async def create_api_key(
    *, session: AsyncSession, name: str, role: Role, key: str | None = None
) -> tuple[ApiKeyRow, str]:
    key = key or new_secret("sk")
    existing = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_secret(key)))
    if existing is not None:
        return existing, key
    row = ApiKeyRow(name=name, role=role, key_hash=hash_secret(key), key_prefix=key[:10])
    session.add(row)
    await session.flush()
    return row, key


async def list_api_keys(*, session: AsyncSession) -> list[ApiKeyRow]:
    return list(await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)))


async def revoke_api_key(
    *, session: AsyncSession, key_id: uuid.UUID
) -> tuple[ApiKeyRow | None, bool]:
    """The row, and whether this call revoked it (False when it was revoked already). The
    last active admin key is not revoked: nobody could create keys any more."""
    row = await session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None:
        return row, False
    if row.role == "admin":
        # Locked, so that two admins revoking each other's keys cannot both succeed.
        admins = await session.scalars(
            select(ApiKeyRow.id)
            .where(ApiKeyRow.role == "admin", ApiKeyRow.revoked_at.is_(None))
            .with_for_update()
        )
        if list(admins) == [row.id]:
            raise ApiError(
                409, "conflict", "this is the last active admin key; create another one first"
            )
    row.revoked_at = utcnow()
    return row, True


async def find_api_key(*, session: AsyncSession, key: str) -> ApiKeyRow | None:
    """The active API key row for a bearer token (looked up by its hash)."""
    return await session.scalar(
        select(ApiKeyRow).where(
            ApiKeyRow.key_hash == hash_secret(key), ApiKeyRow.revoked_at.is_(None)
        )
    )
