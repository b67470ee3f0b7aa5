"""Redis stopped and started again, and stalled, under a running orchestrator: the loops wait
it out, every event is applied once and every action is produced (DESIGN §8)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.orchestrator.profile_store import ProfileStore
from shared.customer_keys import CustomerKeys
from shared.embedded import EmbeddedStack, free_port
from shared.events import Event
from shared.settings import Settings
from shared.topics import Topics
from tests.kafka_io import TopicReader, actions, event, produce_events, publish_config
from tests.stack import PORT_FIELDS, ServiceProcess

pytestmark = pytest.mark.timeout(180)

ORDER = "Order Completed"
BUNDLE = {
    "journeys": [
        {
            "key": "purchase",
            "stages": [
                {"key": "awareness", "when": "true"},
                {"key": "purchase", "when": f'event.name == "{ORDER}"'},
            ],
        }
    ],
    "rules": [
        {
            "key": "thank-you",
            "trigger": {"event": ORDER},
            "action": {"channel": "log", "message": "thanks for {{ trigger.properties.order }}"},
        },
        {
            "key": "follow-up",
            "trigger": {"event": ORDER},
            "wait": {"for": "2s", "key": "event.properties.order"},
            "action": {"channel": "log", "message": "how was {{ trigger.properties.order }}?"},
        },
    ],
}


def sent(values: list[bytes]) -> set[tuple[str, str, str]]:
    """The (rule, customer, order) of every action on the actions topic."""
    return {
        (a.rule, a.customer_id, (a.trigger or {})["properties"]["order"]) for a in actions(values)
    }


async def test_the_orchestrator_waits_out_a_redis_outage_and_loses_nothing(
    settings: Settings, service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # Its own Redis on a fixed port, so that it comes back at the same address with its data
    # (append-only file; a SIGTERM lets it write the file out).
    taken = {getattr(settings, field) for field in PORT_FIELDS.values()}
    port = next(p for p in iter(free_port, None) if p not in taken)
    redis_server = EmbeddedStack(
        tmp_path / "own-redis", kafka=False, postgres=False, redis_port=port
    )
    urls = redis_server.start()
    try:
        own = settings.model_copy(update={"redis_url": urls.redis_url})
        await publish_config(own, BUNDLE)
        orchestrator = await service("orchestrator", settings_=own).start()
        customers = [f"redis-outage-{n}" for n in range(40)]

        def placed(order: str) -> list[Event]:
            return [event(c, ORDER, order=f"{c}-{order}") for c in customers]

        async with TopicReader(own, Topics(own.namespace).actions) as reader:
            await produce_events(own, placed("before"))
            await reader.until(lambda v: len(sent(v)) >= len(customers), what="first thank-yous")

            # The follow-ups of the first orders come due while Redis is away.
            redis_server.stop()
            await produce_events(own, placed("during"))
            await asyncio.sleep(3)  # the loops fail against the missing Redis and retry
            assert orchestrator.proc is not None and orchestrator.proc.poll() is None
            redis_server.start()

            # Then Redis stalls (stopped, not gone): the loops wait for it, and readiness
            # says so within its bound instead of hanging.
            [server] = redis_server.children
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                await produce_events(own, placed("stalled"))
                async with httpx.AsyncClient(timeout=10) as client:
                    started = time.monotonic()
                    ready = await client.get(f"{orchestrator.url}/readyz")
                    assert ready.status_code == 503
                    assert ready.json()["checks"]["redis"] is False
                    assert time.monotonic() - started < 5
            finally:
                server.proc.send_signal(signal.SIGCONT)
            await produce_events(own, placed("after"))

            expected = {
                (rule, c, f"{c}-{when}")
                for rule in ("thank-you", "follow-up")
                for c in customers
                for when in ("before", "during", "stalled", "after")
            }
            await reader.until(
                lambda v: sent(v) >= expected, timeout=60, what="every order's two actions"
            )
            counted = sent(await reader.to_end())
        assert set(counted) == expected  # and nothing else
        assert orchestrator.proc is not None and orchestrator.proc.poll() is None

        redis = Redis.from_url(own.require("redis_url"))
        try:
            stored = await ProfileStore(redis, CustomerKeys(own.namespace)).load_many(customers)
        finally:
            await redis.aclose()
        # Every order applied exactly once.
        assert {c: s.profile.counts.get(ORDER) for c, s in stored.items() if s.profile} == {
            c: 4 for c in customers
        }
    finally:
        redis_server.stop()
