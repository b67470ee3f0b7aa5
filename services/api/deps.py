"""FastAPI dependencies as ``Annotated`` aliases: sessions, clients, the caller's role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.access.service import ROLE_RANK, Role, find_api_key
from services.api.config.publisher import ConfigPublisher
from shared.customer_keys import CustomerKeys
from shared.http import ApiError
from shared.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _redis(request: Request) -> Redis:
    return request.app.state.redis


def _keys(request: Request) -> CustomerKeys:
    return request.app.state.customer_keys


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _publisher(request: Request) -> ConfigPublisher:
    return request.app.state.publisher


SessionDep = Annotated[AsyncSession, Depends(_session)]
RedisDep = Annotated[Redis, Depends(_redis)]
KeysDep = Annotated[CustomerKeys, Depends(_keys)]
PublisherDep = Annotated[ConfigPublisher, Depends(_publisher)]
SettingsDep = Annotated[Settings, Depends(_settings)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


def _require(minimum: Role) -> Callable[..., Awaitable[Principal]]:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer")
        # Its own short session, so the route's session starts with no transaction open.
        async with request.app.state.sessions() as session:
            row = await find_api_key(session=session, key=credentials.credentials)
        if row is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        if ROLE_RANK[row.role] < ROLE_RANK[minimum]:
            raise ApiError(
                403, "forbidden", f"this needs the {minimum} role; the key is {row.role}"
            )
        return Principal(row.name, row.role)  # type: ignore[arg-type]

    return check


Viewer = Annotated[Principal, Depends(_require("viewer"))]
Editor = Annotated[Principal, Depends(_require("editor"))]
Admin = Annotated[Principal, Depends(_require("admin"))]
