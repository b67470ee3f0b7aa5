"""The ingest service: Segment-compatible HTTP in, acknowledged Kafka records out."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from redis.asyncio import Redis

from services.ingest import metrics
from services.ingest.identity import IdentityLinks
from services.ingest.rate_limit import RateLimiter
from services.ingest.request_body import decompress, parse_json
from services.ingest.segment import (
    MAX_BATCH_EVENTS,
    ROUTE_TYPES,
    InvalidMessage,
    normalize,
)
from services.ingest.write_keys import WriteKeys, key_from_request
from shared.config_feed import ConfigFeed
from shared.customer_keys import CustomerKeys
from shared.events import Event, EventType
from shared.http import (
    ApiError,
    JsonResponse,
    ReadinessCheck,
    add_health_routes,
    install_error_handlers,
)
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

SUCCESS = {"success": True}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        producer = make_producer(
            settings, request_timeout_ms=int(settings.ingest_kafka_timeout_s * 1000)
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        redis = Redis.from_url(settings.require("redis_url"))
        stack.push_async_callback(redis.aclose)
        write_keys = WriteKeys()
        feed = await stack.enter_async_context(ConfigFeed(settings, write_keys.update))
        app.state.producer = producer
        app.state.redis = redis
        app.state.feed = feed
        app.state.write_keys = write_keys
        app.state.identity = IdentityLinks(redis, CustomerKeys(settings.namespace))
        app.state.limiter = RateLimiter(settings.ingest_rate_per_key, settings.ingest_rate_burst)
        app.state.events_topic = Topics(settings.namespace).events
        yield


async def _produce(request: Request, events: list[Event]) -> None:
    """Answer only once Kafka acknowledged every event; otherwise 503, never 200."""
    state = request.app.state
    settings: Settings = state.settings
    try:
        async with asyncio.timeout(settings.ingest_kafka_timeout_s):
            futures = [
                await state.producer.send(
                    state.events_topic, event.to_json(), key=event.customer_id.encode()
                )
                for event in events
            ]
            await asyncio.gather(*futures)
    except (KafkaError, TimeoutError) as exc:
        log.warning("kafka did not acknowledge %d events: %r", len(events), exc)
        for event in events:
            metrics.EVENTS.labels(event.type, "unavailable").inc()
        raise ApiError(
            503, "unavailable", "events could not be stored; retry later", {"Retry-After": "5"}
        ) from None
    for event in events:
        metrics.EVENTS.labels(event.type, "accepted").inc()


async def _accept(request: Request, route_type: str | None) -> Response:
    started = time.perf_counter()
    status = 500
    try:
        response = await _handle(request, route_type)
        status = response.status_code
        return response
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        metrics.REQUEST_DURATION.labels(
            "batch" if route_type is None else "single", str(status)
        ).observe(time.perf_counter() - started)


async def _handle(request: Request, route_type: str | None) -> Response:
    state = request.app.state
    received_at = datetime.now(UTC)
    body = decompress(await request.body(), request.headers.get("content-encoding"))
    payload = parse_json(body)
    key_hash = state.write_keys.authenticate(
        key_from_request(request.headers.get("authorization"), payload)
    )
    events: list[Event] = []
    if route_type is None:
        items = payload.get("batch")
        if not isinstance(items, list):
            raise ApiError(400, "invalid_batch", "a batch body needs a `batch` array")
        if len(items) > MAX_BATCH_EVENTS:
            raise ApiError(
                400, "batch_too_large", f"a batch holds at most {MAX_BATCH_EVENTS} events"
            )
        for item in items:
            try:
                events.append(_normalize(item, None, received_at, payload))
            except InvalidMessage as exc:
                kind = item.get("type") if isinstance(item, dict) else None
                metrics.EVENTS.labels(str(kind)[:16], "rejected").inc()
                log.info("dropped an invalid event from a batch: %s", exc)
    else:
        try:
            events.append(_normalize(payload, ROUTE_TYPES[route_type], received_at, None))
        except InvalidMessage as exc:
            metrics.EVENTS.labels(ROUTE_TYPES[route_type], "rejected").inc()
            raise ApiError(400, "invalid_event", str(exc)) from None
    if events:
        wait = state.limiter.take(key_hash, len(events), time.monotonic())
        if wait:
            for event in events:
                metrics.EVENTS.labels(event.type, "rate_limited").inc()
            raise ApiError(
                429,
                "rate_limited",
                "too many events for this write key",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        await state.identity.resolve(events)
        await _produce(request, events)
    return JsonResponse(SUCCESS)


def _normalize(
    message: Any, type_hint: EventType | None, received_at: datetime, batch: dict[str, Any] | None
) -> Event:
    size = len(orjson.dumps(message)) if isinstance(message, dict) else None
    return normalize(message, type_hint=type_hint, received_at=received_at, batch=batch, size=size)


def _checks(request: Request) -> Mapping[str, ReadinessCheck]:
    state = request.app.state

    async def kafka() -> bool:
        return bool(await state.producer.client.ready(state.producer.client.get_random_node()))

    async def redis() -> bool:
        return bool(await state.redis.ping())

    async def config() -> bool:
        return bool(state.feed.ready.is_set())

    return {"kafka": kafka, "redis": redis, "config": config}


def _endpoint(route_type: str | None) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _accept(request, route_type)

    return endpoint


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Safar ingest",
        description="Segment-compatible tracking API: point analytics SDKs at this host.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Retry-Count", "AnonymousId"],
        max_age=86400,
    )

    for path in ("batch", "b", "import"):
        app.add_api_route(
            f"/v1/{path}",
            _endpoint(None),
            methods=["POST"],
            tags=["tracking"],
            summary="A batch of up to 2,500 messages",
            name=f"batch_{path}",
        )
    for path, kind in ROUTE_TYPES.items():
        app.add_api_route(
            f"/v1/{path}",
            _endpoint(path),
            methods=["POST"],
            tags=["tracking"],
            summary=f"One {kind} message",
            name=f"single_{path}",
        )
    add_health_routes(app, _checks)
    return app
