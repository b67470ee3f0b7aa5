"""Customer state as the orchestrator keeps it in Redis."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.api.deps import KeysDep, RedisDep, Viewer
from shared.http import ApiError
from shared.profile import Profile

router = APIRouter(prefix="/v1/customers", tags=["customers"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@router.get("/{customer_id}", summary="Profile and stage per journey")
async def get_customer(
    customer_id: str, redis: RedisDep, keys: KeysDep, _: Viewer
) -> dict[str, Any]:
    raw = await redis.hget(keys.profile(customer_id), "p")
    if raw is None:
        linked = await redis.get(keys.identity(customer_id))
        if linked is not None:
            raw = await redis.hget(keys.profile(_text(linked)), "p")
    if raw is None:
        raise ApiError(404, "not_found", f"no customer {customer_id!r}")
    return Profile.from_json(raw).view()
