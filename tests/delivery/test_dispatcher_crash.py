"""SIGKILL of the dispatcher process during a burst: nothing lost, nothing repeated after
its success was recorded; the crash window's duplicates are counted and carry the same id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from services.orchestrator.dispatcher.delivery_log import RecordedOutcome
from shared.dispatch_keys import DispatchKeys
from shared.kafka import make_consumer
from shared.settings import Settings
from shared.topics import Topics
from tests.delivery.conftest import make_action
from tests.delivery.receiver import Reply, WebhookReceiver
from tests.stack import ServiceProcess, eventually

log = logging.getLogger(__name__)

ACTIONS = 2_000


@pytest.mark.timeout(150)
async def test_sigkill_mid_burst_delivers_everything_and_repeats_only_the_crash_window(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    producer: AIOKafkaProducer,
    redis: Redis,
    service: Callable[..., ServiceProcess],
    record_property: Callable[[str, object], None],
) -> None:
    url = receiver.script("burst", [Reply(delay_s=0.002)])
    actions = [
        make_action(
            {"channel": "webhook", "url": url, "payload": {"n": i}}, customer_id=f"c{i % 97}"
        )
        for i in range(ACTIONS)
    ]
    ids = {a.action_id for a in actions}
    topics = Topics(dispatch_settings.namespace)
    # A generous timeout: a retry after a slow answer would be a duplicate too (the same
    # id, at least once), but not one of the crash window this test counts.
    settings = dispatch_settings.model_copy(update={"webhook_timeout_s": 10.0})
    dispatcher = await service("orchestrator", "--role", "dispatcher", settings_=settings).start()

    sends = [
        await producer.send(topics.actions, a.to_json(), key=a.customer_id.encode())
        for a in actions
    ]
    await asyncio.gather(*sends)

    async def distinct() -> int:
        return len({r.webhook_id for r in receiver.received})

    await eventually(
        distinct,
        lambda n: n >= ACTIONS // 4,
        timeout=60,
        interval=0.005,
        what="a quarter delivered",
    )
    dispatcher.kill()
    # The receiver shares this event loop: requests the dead process had already written
    # are read once the loop runs again, so they are drained (no arrival for 0.3 s) before
    # the restart is timed.
    arrived = -1
    while arrived != len(receiver.received):
        arrived = len(receiver.received)
        await asyncio.sleep(0.3)
    delivered_before_kill = await distinct()
    assert delivered_before_kill < ACTIONS, "the burst was over before the kill"
    restarted_at = time.time()
    await dispatcher.start()

    await eventually(distinct, lambda n: n == ACTIONS, timeout=90, what="every action delivered")
    outcomes = await eventually(
        lambda: _outcomes(redis, dispatch_settings, sorted(ids)),
        lambda found: all(o is not None for o in found.values()),
        what="every outcome recorded",
    )
    # The topic is fresh and holds only these actions, so the committed offsets add up to
    # their number once the group has committed past every one of them.
    await eventually(
        lambda: _committed(dispatch_settings),
        lambda committed: committed == ACTIONS,
        timeout=30,
        what="every offset committed",
    )

    received = list(receiver.received)
    assert all(r.verified for r in received)
    assert all(r.json()["id"] == r.webhook_id for r in received)
    assert {r.webhook_id for r in received} == ids
    for arrival in received:
        outcome = outcomes[arrival.webhook_id]
        assert outcome is not None and outcome.status == "sent"
        recorded_at = datetime.fromisoformat(outcome.at).timestamp()
        assert arrival.wall <= recorded_at, f"{arrival.webhook_id} arrived after its success"
    arrivals: dict[str, list[float]] = {}
    for arrival in received:
        arrivals.setdefault(arrival.webhook_id, []).append(arrival.wall)
    duplicated = {aid: times for aid, times in arrivals.items() if len(times) > 1}
    duplicates = len(received) - ACTIONS
    # Only attempts in flight when the process died come again: one each, bounded by the
    # deliveries in flight at once, first before the kill and again after the restart.
    assert duplicates <= dispatch_settings.dispatch_max_concurrency
    for times in duplicated.values():
        assert len(times) == 2 and times[0] < restarted_at <= times[1]
    record_property("delivered_before_kill", delivered_before_kill)
    record_property("crash_window_duplicates", duplicates)
    log.warning(
        "crash test: %d of %d delivered before SIGKILL; %d duplicates (same webhook-id)",
        delivered_before_kill,
        ACTIONS,
        duplicates,
    )


async def _outcomes(
    redis: Redis, settings: Settings, ids: list[str]
) -> dict[str, RecordedOutcome | None]:
    keys = DispatchKeys(settings.namespace)
    async with redis.pipeline(transaction=False) as pipe:
        for aid in ids:
            pipe.get(keys.outcome(aid))
        raw = await pipe.execute()
    return {
        aid: None if r is None else RecordedOutcome.from_json(r)
        for aid, r in zip(ids, raw, strict=True)
    }


async def _committed(settings: Settings) -> int:
    """The dispatcher group's committed offsets on safar.actions, added up."""
    topics = Topics(settings.namespace)
    consumer: AIOKafkaConsumer = make_consumer(settings, group_id=topics.group("dispatcher"))
    await consumer.start()
    try:
        total = 0
        for partition in range(settings.actions_partitions):
            total += await consumer.committed(TopicPartition(topics.actions, partition)) or 0
        return total
    finally:
        await consumer.stop()
