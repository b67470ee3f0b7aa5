"""The api service: configuration, customer state, analytics, credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from services.api.access.views import router as access_router
from services.api.analytics.stage_counts import StageCounts
from services.api.analytics.views import router as analytics_router
from services.api.audit.views import router as audit_router
from services.api.config.publisher import ConfigPublisher
from services.api.config.views import router as config_router
from services.api.customers.views import actions_router
from services.api.customers.views import router as customers_router
from services.api.db.base import make_engine, make_sessions, sqlstate
from services.api.db.migrate import upgrade
from services.api.journeys.views import router as journeys_router
from services.api.metrics import RequestMetrics
from services.api.recorder.recorder import HistoryRecorder
from services.api.rules.views import router as rules_router
from shared.customer_keys import CustomerKeys
from shared.http import (
    ReadinessCheck,
    add_health_routes,
    error_response,
    install_error_handlers,
    unexpected_error,
)
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        engine = make_engine(settings.require("database_url"))
        stack.push_async_callback(engine.dispose)
        await upgrade(engine)
        redis = Redis.from_url(settings.require("redis_url"))
        stack.push_async_callback(redis.aclose)
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        app.state.engine = engine
        app.state.sessions = make_sessions(engine)
        app.state.redis = redis
        app.state.customer_keys = CustomerKeys(settings.namespace)
        app.state.publisher = ConfigPublisher(
            producer, Topics(settings.namespace).config, app.state.sessions
        )
        await app.state.publisher.publish()
        recorder = HistoryRecorder(settings, app.state.sessions, producer)
        await recorder.start()
        stack.push_async_callback(recorder.stop)
        stage_counts = StageCounts(app.state.sessions)
        stage_counts.start()
        stack.push_async_callback(stage_counts.stop)
        yield


def _checks(request: Request) -> Mapping[str, ReadinessCheck]:
    state = request.app.state

    async def postgres() -> bool:
        async with state.engine.connect() as connection:
            return (await connection.scalar(text("SELECT 1"))) == 1

    async def redis() -> bool:
        return bool(await state.redis.ping())

    return {"postgres": postgres, "redis": redis}


async def _data_error(request: Request, exc: Exception) -> Response:
    """PostgreSQL refused a value the request carried (SQLSTATE class 22: a NUL character,
    a number or time out of range): the request is invalid; anything else is unexpected."""
    assert isinstance(exc, DBAPIError)
    if not sqlstate(exc).startswith("22"):
        return await unexpected_error(request, exc)
    reason = str(exc.orig).strip().splitlines()[-1] if exc.orig else "invalid value"
    return error_response(422, "invalid", f"a value of the request cannot be used: {reason}")


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Safar api",
        description=(
            "Configure journeys and rules, read customer state and journey analytics. "
            "Authenticate with `Authorization: Bearer <API key>`."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_exception_handler(DBAPIError, _data_error)
    for router in (journeys_router, customers_router, access_router):
        app.include_router(router)
    for router in (rules_router, config_router, audit_router):
        app.include_router(router)
    for router in (analytics_router, actions_router):
        app.include_router(router)
    app.add_middleware(RequestMetrics)
    add_health_routes(app, _checks)
    return app
