"""The retry schedule's lease on real Redis, and dispatchers sharing the group: partitions
handed over while actions flow lose nothing and repeat nothing."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.orchestrator.dispatcher.retry_schedule import RetrySchedule
from shared.dispatch_keys import DispatchKeys
from shared.settings import Settings
from shared.topics import Topics
from tests.delivery.conftest import StartDispatcher, make_action, recorded_outcome
from tests.delivery.receiver import Reply, WebhookReceiver
from tests.stack import eventually

pytestmark = pytest.mark.timeout(90)


async def test_a_claimed_retry_falls_due_again_when_its_claimer_goes_silent(
    dispatch_settings: Settings, redis: Redis
) -> None:
    schedule = RetrySchedule(redis, DispatchKeys(dispatch_settings.namespace))
    action = make_action({"channel": "log", "message": "hi"})
    now = time.time()
    await schedule.put(action, now + 1.0)
    assert await schedule.claim(now, 10, lease_s=5.0) == []  # not due yet
    [(claimed_id, raw)] = await schedule.claim(now + 1.01, 10, lease_s=5.0)
    assert claimed_id == action.action_id
    assert raw == action.to_json()
    assert await schedule.claim(now + 2.0, 10, lease_s=5.0) == []  # leased
    assert [i for i, _ in await schedule.claim(now + 6.1, 10, lease_s=5.0)] == [claimed_id]
    assert await schedule.contains(action.action_id)
    await schedule.remove(action.action_id)
    assert not await schedule.contains(action.action_id)
    assert await schedule.claim(now + 100, 10, lease_s=5.0) == []


async def test_a_scheduled_retry_whose_id_is_not_text_is_dropped(
    dispatch_settings: Settings, redis: Redis
) -> None:
    keys = DispatchKeys(dispatch_settings.namespace)
    schedule = RetrySchedule(redis, keys)
    action = make_action({"channel": "log", "message": "hi"})
    now = time.time()
    await schedule.put(action, now - 1)
    await redis.hset(keys.retry_actions, b"\xff\xfe", action.to_json())
    await redis.zadd(keys.retry_due, {b"\xff\xfe": 0})
    assert [i for i, _ in await schedule.claim(now, 10, lease_s=5.0)] == [action.action_id]
    assert await redis.zcard(keys.retry_due) == 1
    assert not await redis.hexists(keys.retry_actions, b"\xff\xfe")


async def test_partitions_move_between_dispatchers_without_loss_or_repeats(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    redis: Redis,
) -> None:
    url = receiver.script("shared", [Reply(delay_s=0.01)])
    actions = [
        make_action({"channel": "webhook", "url": url}, customer_id=f"c{i % 31}")
        for i in range(600)
    ]
    topic = Topics(dispatch_settings.namespace).actions
    first = await start_dispatcher(dispatch_max_concurrency=8)
    sends = [await producer.send(topic, a.to_json(), key=a.customer_id.encode()) for a in actions]
    for sent in sends:
        await sent

    async def distinct() -> int:
        return len({r.webhook_id for r in receiver.received})

    await eventually(distinct, lambda n: n >= 100, interval=0.005, what="some delivered")
    await start_dispatcher(dispatch_max_concurrency=8)  # joins: the partitions are split
    await eventually(distinct, lambda n: n >= 300, interval=0.005, what="more delivered")
    assert await distinct() < len(actions), "the burst was over before the hand-over"
    await first.stop()  # leaves: the second takes every partition
    await eventually(distinct, lambda n: n == len(actions), timeout=60, what="all delivered")

    received = list(receiver.received)
    assert all(r.verified for r in received)
    # Graceful hand-overs finish or give back every attempt: nothing is sent twice.
    assert len(received) == len(actions)
    for arrival in received[:: len(received) // 20]:
        outcome = await recorded_outcome(redis, dispatch_settings, arrival.webhook_id)
        assert outcome is not None and outcome.status == "sent"
        assert arrival.wall <= datetime.fromisoformat(outcome.at).timestamp()
