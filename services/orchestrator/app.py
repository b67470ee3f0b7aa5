"""The orchestrator process: consumer loops in a lifespan, plus health and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request

from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.dispatcher import Dispatcher
from services.orchestrator.event_consumer import EventConsumer
from services.orchestrator.events_progress import EventsProgress
from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.redis_client import orchestrator_redis
from services.orchestrator.timer_loop import TimerLoop
from services.orchestrator.wait_index import WaitIndex
from shared.config_feed import ConfigFeed
from shared.customer_keys import CustomerKeys
from shared.http import ReadinessCheck, add_health_routes, install_error_handlers
from shared.kafka import make_consumer, make_producer, stop_consumer
from shared.runtime import tune_gc
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

Role = Literal["all", "events", "timers", "dispatcher"]
ROLES: tuple[str, ...] = ("all", "events", "timers", "dispatcher")


def _stop_process_on_failure(app: FastAPI) -> None:
    """A loop that dies takes the process down (non-zero), instead of idling unhealthy."""

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("%s stopped: %r", task.get_name(), exc, exc_info=exc)
            app.state.failed = True
            os.kill(os.getpid(), signal.SIGTERM)

    app.state.on_loop_done = done


async def _run_events(app: FastAPI, worker: EventConsumer, feed: ConfigFeed) -> None:
    if not feed.ready.is_set():
        log.info("waiting for a configuration on %s (is the api running?)", app.state.topics.config)
        await feed.ready.wait()
    worker.subscribe()
    app.state.worker = worker
    await worker.run()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    topics = Topics(settings.namespace)
    app.state.topics = topics
    app.state.consuming = False
    app.state.failed = False
    async with AsyncExitStack() as stack:
        redis = orchestrator_redis(settings)
        stack.push_async_callback(redis.aclose)
        app.state.redis = redis
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        active = ActiveConfig()
        feed = await stack.enter_async_context(ConfigFeed(settings, active.update))
        app.state.feed = feed
        keys = CustomerKeys(settings.namespace)
        store = ProfileStore(redis, keys)
        waits = WaitIndex(redis, keys, settings.timer_shards)
        progress = EventsProgress(redis, keys)
        role: Role = app.state.role
        tasks = []
        if role in ("all", "events"):
            consumer = make_consumer(
                settings,
                group_id=topics.group("orchestrator"),
                max_poll_interval_ms=300_000,
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            )
            await consumer.start()
            stack.push_async_callback(stop_consumer, consumer)
            worker = EventConsumer(settings, consumer, producer, store, waits, progress, active)
            tasks.append(asyncio.create_task(_run_events(app, worker, feed), name="events-loop"))
        else:
            app.state.consuming = True
        if role in ("all", "timers"):
            timers = TimerLoop(settings, producer, store, waits, progress, active)
            tasks.append(asyncio.create_task(timers.run(), name="timer-loop"))
        if role in ("all", "dispatcher"):
            dispatcher = Dispatcher(settings, redis, producer, active)
            await stack.enter_async_context(dispatcher)
            app.state.dispatcher = dispatcher
            tasks.append(dispatcher.task)
        _stop_process_on_failure(app)
        tune_gc()
        for task in tasks:
            task.add_done_callback(app.state.on_loop_done)
        try:
            yield
        finally:
            await _cancel(tasks)


async def _cancel(tasks: list[asyncio.Task[None]], grace_s: float = 5.0) -> None:
    """Cancel the loops and wait a bounded time: redis-py can swallow a cancel that lands
    mid-command, so a loop is cancelled again until it ends, and never waited for forever."""
    deadline = asyncio.get_running_loop().time() + grace_s
    pending = {t for t in tasks if not t.done()}
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for task in pending:
        log.warning("%s did not stop within %.0fs; leaving it", task.get_name(), grace_s)


def _checks(request: Request) -> Mapping[str, ReadinessCheck]:
    state = request.app.state

    async def redis() -> bool:
        return bool(await state.redis.ping())

    async def config() -> bool:
        return bool(state.feed.ready.is_set())

    async def consuming() -> bool:
        # Ready once the group has handed this process its partitions, not merely joined.
        worker = getattr(state, "worker", None)
        return bool(state.consuming or (worker is not None and worker.assigned))

    async def dispatching() -> bool:
        return bool(state.dispatcher.ready)

    checks: dict[str, ReadinessCheck] = {"redis": redis, "consumer": consuming}
    if state.role != "dispatcher":  # a dispatcher delivers what needs no configuration
        checks["config"] = config
    if state.role in ("all", "dispatcher"):
        checks["dispatcher"] = dispatching
    return checks


def create_app(settings: Settings, role: Role = "all") -> FastAPI:
    app = FastAPI(title="Safar orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.role = role
    install_error_handlers(app)
    add_health_routes(app, _checks)
    return app
