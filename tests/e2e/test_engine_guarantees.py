"""Effectively-once processing on the real stack: replays, poison events, scale-out."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from shared.customer_keys import CustomerKeys
from shared.kafka import make_consumer, make_producer
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics
from tests.kafka_io import TopicReader, event, produce_events, publish_config
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(240)

JOURNEY = {
    "key": "purchase",
    "stages": [
        {"key": "awareness", "when": "true"},
        {"key": "consideration", "when": 'event.name == "Product Viewed"'},
        {"key": "decision", "when": 'event.name == "Product Added"'},
        {"key": "purchase", "when": 'event.name == "Order Completed"'},
        {"key": "retention", "when": 'count("Order Completed") >= 2'},
        {"key": "loyalty", "when": 'count("Order Completed") >= 3'},
    ],
}
RULES: list[dict[str, Any]] = [
    {
        "key": "thank-you",
        "trigger": {"event": "Order Completed"},
        "action": {"channel": "log", "message": "thanks {{ customer.id }}"},
    },
    {
        "key": "loyalty-offer",
        "trigger": {"stage_entered": {"journey": "purchase", "stage": "loyalty"}},
        "action": {"channel": "log", "message": "offer"},
    },
]
NAMES = ["Product Viewed", "Product Added", "Order Completed"]


async def _metric(process: ServiceProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{process.url}/metrics")).text
    return metric_value(text, name, **labels)


async def _profiles(settings: Settings, customers: list[str]) -> dict[str, bytes | None]:
    redis = Redis.from_url(settings.require("redis_url"))
    keys = CustomerKeys(settings.namespace)
    try:
        return {c: await redis.hget(keys.profile(c), "p") for c in customers}
    finally:
        await redis.aclose()


async def _rewind(settings: Settings, group: str) -> None:
    """Join the group alone and commit offset 0 everywhere: Kafka redelivers everything."""
    topic = Topics(settings.namespace).events
    consumer = make_consumer(settings, topic, group_id=group)
    await consumer.start()
    try:
        await eventually(
            _assigned(consumer), lambda n: n == settings.events_partitions, what="assignment"
        )
        await consumer.commit({tp: 0 for tp in consumer.assignment()})
    finally:
        await consumer.stop()


def _assigned(consumer: AIOKafkaConsumer) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        await consumer.getmany(timeout_ms=100, max_records=1)
        return len(consumer.assignment())

    return probe


async def test_replaying_ten_thousand_events_changes_nothing(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    await publish_config(settings, {"journeys": [JOURNEY], "rules": RULES})
    customers = [f"r{i}" for i in range(500)]
    events = [event(customers[i % 500], NAMES[(i // 500) % 3]) for i in range(10_000)]
    orchestrator = await service("orchestrator").start()
    await produce_events(settings, events)
    await eventually(
        lambda: _metric(orchestrator, "safar_events_processed_total", outcome="applied"),
        lambda n: n == 10_000,
        timeout=90,
        what="first pass",
    )
    first = await _profiles(settings, customers)
    async with TopicReader(settings, Topics(settings.namespace).actions) as reader:
        actions_before = len(await reader.to_end())
    assert actions_before > 0
    orchestrator.stop()

    await _rewind(settings, Topics(settings.namespace).group("orchestrator"))
    replay = await service("orchestrator").start()
    await eventually(
        lambda: _metric(replay, "safar_events_processed_total", outcome="duplicate"),
        lambda n: n == 10_000,
        timeout=90,
        what="the replay recognised",
    )
    assert await _metric(replay, "safar_events_processed_total", outcome="applied") == 0
    assert await _profiles(settings, customers) == first
    async with TopicReader(settings, Topics(settings.namespace).actions) as reader:
        assert len(await reader.to_end()) == actions_before
    # The profiles are what the events say: 10000 / 500 / 3 rounds per name, roughly.
    sample = Profile.from_json(first["r0"] or b"{}")
    assert sum(sample.counts.values()) == 20


async def test_a_poison_event_is_dead_lettered_and_the_partition_moves_on(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    await publish_config(settings, {"journeys": [JOURNEY], "rules": RULES})
    orchestrator = await service("orchestrator").start()
    topics = Topics(settings.namespace)
    producer = make_producer(settings)
    await producer.start()
    try:
        # The last one has every field, a list for an id: it once stopped the events loop.
        wrong_type = {
            **orjson.loads(event("p1", "Order Completed").to_json()),
            "customer_id": ["p1"],
        }
        for value in (
            b"not json",
            b'{"schema": 99}',
            orjson.dumps({"schema": 1, "x": 1}),
            orjson.dumps(wrong_type),
            b"[" * 300 + b"]" * 300,  # JSON orjson reads but cannot write back
        ):
            await producer.send_and_wait(topics.events, value, key=b"p1")
    finally:
        await producer.stop()
    await produce_events(settings, [event("p1", "Order Completed")])
    await eventually(
        lambda: _metric(orchestrator, "safar_events_processed_total", outcome="applied"),
        lambda n: n == 1,
        what="the good event after the poison",
    )
    async with TopicReader(settings, topics.dlq) as reader:
        letters = [orjson.loads(v) for v in await reader.until(lambda v: len(v) >= 5)]
    assert [letter["kind"] for letter in letters] == ["event"] * 5
    assert letters[0]["original"] == {"base64": "bm90IGpzb24="}
    assert all(letter["error"] for letter in letters)
    assert letters[4]["original"] == {"base64": base64.b64encode(b"[" * 300 + b"]" * 300).decode()}
    assert await _metric(orchestrator, "safar_dlq_total", kind="event") == 5


async def test_two_orchestrators_share_partitions_and_survive_losing_one(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    await publish_config(settings, {"journeys": [JOURNEY], "rules": RULES})
    first = await service("orchestrator", "--role", "events").start()
    second_settings = settings.model_copy(update={"orchestrator_port": settings.api_port})
    second = await service("orchestrator", "--role", "events", settings_=second_settings).start()
    customers = [f"s{i}" for i in range(200)]
    await produce_events(settings, [event(c, "Product Viewed") for c in customers] * 1)

    async def total() -> float:
        return sum(
            [
                await _metric(p, "safar_events_processed_total", outcome="applied")
                for p in (first, second)
                if p.proc is not None and p.proc.poll() is None
            ]
        )

    await eventually(total, lambda n: n == 200, timeout=60, what="both processing")
    assert await _metric(first, "safar_events_processed_total", outcome="applied") > 0
    assert await _metric(second, "safar_events_processed_total", outcome="applied") > 0
    second.kill()
    await produce_events(settings, [event(c, "Product Viewed") for c in customers])

    async def views() -> list[int]:
        found = await _profiles(settings, customers)
        return [
            Profile.from_json(raw).counts.get("Product Viewed", 0) if raw else 0
            for raw in found.values()
        ]

    counts = await eventually(
        views, lambda v: all(n >= 2 for n in v), timeout=90, what="the survivor took over"
    )
    assert counts == [2] * len(customers)


async def test_identify_merges_the_anonymous_profile_once(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    nudge = {
        "key": "abandoned-cart",
        "trigger": {"event": "Product Added"},
        "wait": {"for": "1h", "key": "event.properties.cart_id"},
        "action": {"channel": "log", "message": "nudge"},
    }
    await publish_config(settings, {"journeys": [JOURNEY], "rules": [nudge]})
    orchestrator = await service("orchestrator").start()
    anonymous = [
        event("anon-7", "Product Viewed"),
        event("anon-7", "Product Added", cart_id="cart-1"),
    ]
    for item in anonymous:
        item.user_id, item.anonymous_id = None, "anon-7"
    await produce_events(settings, anonymous)
    await produce_events(settings, [event("ada", "Product Viewed")])
    await eventually(
        lambda: _metric(orchestrator, "safar_events_processed_total", outcome="applied"),
        lambda n: n == 3,
        what="anonymous events applied",
    )
    identify = event("ada", "", kind="identify")
    identify.name, identify.anonymous_id = None, "anon-7"
    await produce_events(settings, [identify, identify])  # a retried identify changes nothing
    found = await eventually(
        lambda: _profiles(settings, ["ada", "anon-7"]),
        lambda p: p["anon-7"] is None,
        what="the anonymous profile merged and removed",
    )
    ada = Profile.from_json(found["ada"] or b"{}")
    assert ada.counts == {"Product Viewed": 2, "Product Added": 1}
    assert ada.stages["purchase"].stage == "decision"
    assert [(w.rule, w.key) for w in ada.waits] == [("abandoned-cart", "cart-1")]
    assert ada.merged == ["anon-7"]
    # The carried-over wait is indexed under the known customer, so it will fire for ada.
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        keys = CustomerKeys(settings.namespace)
        members = [
            m
            for shard in range(settings.timer_shards)
            for m in await redis.zrange(f"{keys.prefix}:timers:{{{shard}}}", 0, -1)
        ]
    finally:
        await redis.aclose()
    assert b"ada\x1eabandoned-cart\x1fcart-1" in members
