"""The ingest service: Segment-compatible HTTP in, acknowledged Kafka records out."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from services.ingest import metrics
from services.ingest.circuit_breaker import CircuitBreaker
from services.ingest.cors import Cors
from services.ingest.event_writer import EventWriter, KafkaUnavailable
from services.ingest.identity import IdentityLinks
from services.ingest.rate_limit import RateLimiter
from services.ingest.request_body import check_content_length, decompress, parse_json, read_body
from services.ingest.segment import (
    MAX_BATCH_EVENTS,
    ROUTE_TYPES,
    InvalidMessage,
    normalize,
    type_label,
)
from services.ingest.write_keys import WriteKeys, key_from_body, key_from_header
from shared.config_feed import ConfigFeed
from shared.customer_keys import CustomerKeys
from shared.events import Event, EventType
from shared.http import (
    ApiError,
    JsonResponse,
    ReadinessCheck,
    add_health_routes,
    error_response,
    install_error_handlers,
)
from shared.kafka import make_producer
from shared.runtime import tune_gc
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

SUCCESS = {"success": True}
# While Kafka is down, one request per interval probes it; the rest get 503 at once.
KAFKA_PROBE_INTERVAL_S = 1.0
KAFKA_RETRY_AFTER = "5"
# Identity links are best effort: a slow Redis must not hold requests up.
REDIS_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Ingest:
    """What a tracking request needs, built by the lifespan."""

    write_keys: WriteKeys
    limiter: RateLimiter
    identity: IdentityLinks
    writer: EventWriter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        # Every response waits for its ack, so the linger is paid by each request; 1 ms still
        # packs concurrent requests into one produce request.
        producer = make_producer(
            settings,
            request_timeout_ms=int(settings.ingest_kafka_timeout_s * 1000),
            linger_ms=1,
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        redis = Redis.from_url(
            settings.require("redis_url"),
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        stack.push_async_callback(redis.aclose)
        write_keys = WriteKeys()
        feed = await stack.enter_async_context(ConfigFeed(settings, write_keys.update))
        app.state.producer = producer
        app.state.redis = redis
        app.state.feed = feed
        app.state.ingest = Ingest(
            write_keys=write_keys,
            limiter=RateLimiter(settings.ingest_rate_per_key, settings.ingest_rate_burst),
            identity=IdentityLinks(redis, CustomerKeys(settings.namespace)),
            writer=EventWriter(
                producer,
                Topics(settings.namespace).events,
                deadline_s=settings.ingest_kafka_timeout_s,
                breaker=CircuitBreaker(KAFKA_PROBE_INTERVAL_S),
                linger_s=settings.ingest_linger_ms / 1000,
            ),
        )
        tune_gc()
        yield


def _count(events: Iterable[Event], outcome: str) -> None:
    for kind, n in Counter(event.type for event in events).items():
        metrics.events(kind, outcome).inc(n)


async def _body(request: Request) -> dict[str, Any]:
    check_content_length(request.headers.get("content-length"))
    try:
        raw = await read_body(request.stream())
    except ClientDisconnect:
        raise ApiError(400, "incomplete_body", "the client disconnected mid-body") from None
    return parse_json(decompress(raw, request.headers.get("content-encoding")))


def _batch_events(payload: dict[str, Any], received_at: datetime) -> list[Event]:
    """Valid items become events; invalid ones are dropped, counted and logged."""
    items = payload.get("batch")
    if not isinstance(items, list):
        raise ApiError(400, "invalid_batch", "a batch body needs a `batch` array")
    if len(items) > MAX_BATCH_EVENTS:
        raise ApiError(400, "batch_too_large", f"a batch holds at most {MAX_BATCH_EVENTS:,} events")
    events: list[Event] = []
    first: tuple[int, InvalidMessage] | None = None  # the first item dropped, for the log
    for index, item in enumerate(items):
        try:
            events.append(normalize(item, type_hint=None, received_at=received_at, batch=payload))
        except InvalidMessage as exc:
            metrics.events(type_label(item), "rejected").inc()
            first = first or (index, exc)
    if first is not None:
        # One line per batch: a batch of 2,500 invalid items is not 2,500 lines of log.
        index, reason = first
        item = items[index]
        log.info(
            "dropped %d of %d batch items; the first, item %d (messageId %.64r): %s: %s",
            len(items) - len(events),
            len(items),
            index,
            item.get("messageId") if isinstance(item, dict) else None,
            reason.code,
            reason,
        )
    return events


def _single_event(payload: dict[str, Any], kind: EventType, received_at: datetime) -> Event:
    try:
        return normalize(payload, type_hint=kind, received_at=received_at)
    except InvalidMessage as exc:
        metrics.events(kind, "rejected").inc()
        raise ApiError(400, exc.code, str(exc)) from None


async def _handle(request: Request, route_type: str | None) -> Response:
    ingest: Ingest = request.app.state.ingest
    received_at = datetime.now(UTC)
    # A key in the header is checked before the body is read: strangers cost nothing.
    header_key = key_from_header(request.headers.get("authorization"))
    key_hash = ingest.write_keys.authenticate(header_key) if header_key else None
    payload = await _body(request)
    if key_hash is None:
        key_hash = ingest.write_keys.authenticate(key_from_body(payload))
    if route_type is None:
        events = _batch_events(payload, received_at)
        offered = len(payload["batch"])
    else:
        events = [_single_event(payload, ROUTE_TYPES[route_type], received_at)]
        offered = 1
    try:
        if events:
            ingest.writer.admit(time.monotonic())  # while Kafka is down: 503 before any work
        # Every item offered counts, the invalid ones too: they cost the parsing.
        wait = ingest.limiter.take(key_hash, offered, time.monotonic())
        if wait:
            _count(events, "rate_limited")
            raise ApiError(
                429,
                "rate_limited",
                "too many events for this write key; retry after the Retry-After seconds",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )
        if not events:
            return JsonResponse(SUCCESS)
        await ingest.identity.resolve(events)
        await ingest.writer.write(events)
    except KafkaUnavailable:
        _count(events, "unavailable")
        raise
    _count(events, "accepted")
    return JsonResponse(SUCCESS)


async def _answer(request: Request, route_type: str | None) -> Response:
    """The response to a tracking request; a documented error is answered, not raised."""
    try:
        return await _handle(request, route_type)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except KafkaUnavailable:
        return error_response(
            503,
            "unavailable",
            "events could not be stored; retry later",
            {"Retry-After": KAFKA_RETRY_AFTER},
        )


def _endpoint(path: str, route_type: str | None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        status = 500  # unless a response is built: the error handler answers the rest
        try:
            response = await _answer(request, route_type)
            status = response.status_code
            return response
        finally:
            metrics.request_duration(path, status).observe(time.perf_counter() - started)

    return endpoint


class TrackingRoute(APIRoute):
    """Documented in OpenAPI like any route, but served without FastAPI's request handling.

    A tracking endpoint takes only the request, so dependency solving, the per-request exit
    stacks and exception wrapping around it would be pure overhead on the hottest path.
    """

    def __init__(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]], **options: Any
    ) -> None:
        super().__init__(path, endpoint, **options)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive))
            await response(scope, receive, send)

        self.app = app


def _checks(request: Request) -> Mapping[str, ReadinessCheck]:
    state = request.app.state

    async def kafka() -> bool:
        return bool(await state.producer.client.ready(state.producer.client.get_random_node()))

    async def redis() -> bool:
        return bool(await state.redis.ping())

    async def config() -> bool:
        return bool(state.feed.ready.is_set())

    return {"kafka": kafka, "redis": redis, "config": config}


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Safar ingest",
        description="Segment-compatible tracking API: point analytics SDKs at this host.",
        lifespan=lifespan,
        # Ingest reports through Prometheus (DESIGN §10); FastAPI's OpenTelemetry hooks would
        # only look up the unset global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(Cors)
    # Routes match in order: the single-event ones, most requests, come first.
    for name, kind in ROUTE_TYPES.items():
        path = f"/v1/{name}"
        app.router.add_api_route(
            path,
            _endpoint(path, name),
            route_class_override=TrackingRoute,
            methods=["POST"],
            tags=["tracking"],
            summary=f"One {kind} message",
            name=f"single_{name}",
        )
    for name in ("batch", "b", "import"):
        path = f"/v1/{name}"
        app.router.add_api_route(
            path,
            _endpoint(path, None),
            route_class_override=TrackingRoute,
            methods=["POST"],
            tags=["tracking"],
            summary=f"A batch of up to {MAX_BATCH_EVENTS:,} messages",
            name=f"batch_{name}",
        )
    add_health_routes(app, _checks)
    return app
