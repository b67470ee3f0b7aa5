"""Orchestrator throughput against the raw limit, side by side on the same events.

Raw limit: aiokafka ``getmany`` + one pipelined Redis write per event + commit.
Safar: the real events loop (profiles, six stages, ten rules, waits, actions and history
produced to Kafka, compare-and-set writes), one process, same topic, its own group.

Each pass also reports this process's CPU time per event: on a machine shared with the
broker and Redis it moves less than events/s, so it shows a change in Safar's own cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from rich.console import Console

from bench.harness import Stopwatch, demo_events, demo_snapshot, median
from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.event_consumer import EventConsumer
from services.orchestrator.events_progress import EventsProgress
from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.redis_client import orchestrator_redis
from services.orchestrator.wait_index import WaitIndex
from shared.customer_keys import CustomerKeys
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.runtime import tune_gc
from shared.settings import Settings
from shared.topics import Topics

console = Console(stderr=True)


@dataclass
class Pass:
    events_per_s: float
    cpu_us_per_event: float  # this process's CPU time (user + system) per event


@dataclass
class Result:
    raw: list[float]
    safar: list[float]
    raw_cpu: list[float]
    safar_cpu: list[float]

    @property
    def ratio(self) -> float:
        return median(self.safar) / median(self.raw)


async def _produce(settings: Settings, count: int, customers: int) -> None:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        topic = Topics(settings.namespace).events
        pending = []
        for event in demo_events(count, customers):
            pending.append(
                await producer.send(topic, event.to_json(), key=event.customer_id.encode())
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _raw_pass(settings: Settings, count: int) -> Pass:
    """The floor any Kafka->Redis consumer pays: getmany, one HSET per event, commit."""
    consumer = make_consumer(
        settings, Topics(settings.namespace).events, group_id=f"raw-{uuid.uuid4().hex}"
    )
    # The same client options as the events loop: the floor without redis-py's timeouts.
    redis = orchestrator_redis(settings)
    await consumer.start()
    seen = 0
    try:
        watch: Stopwatch | None = None
        cpu = 0.0
        while seen < count:
            batch = await consumer.getmany(
                timeout_ms=200, max_records=settings.orchestrator_batch_size
            )
            if not batch:
                continue
            if watch is None:
                watch, cpu = Stopwatch(), time.process_time()
            async with redis.pipeline(transaction=False) as pipe:
                for records in batch.values():
                    for record in records:
                        pipe.hset(f"raw:{{{record.key.decode()}}}", "p", record.value)
                        seen += 1
                await pipe.execute()
            await consumer.commit()
        assert watch is not None
        return Pass(count / watch.seconds(), (time.process_time() - cpu) / count * 1e6)
    finally:
        await consumer.stop()
        await redis.aclose()


async def _safar_pass(settings: Settings, count: int) -> Pass:
    """The real events loop, fresh namespace for state, same events topic."""
    run = settings.model_copy(update={"namespace": settings.namespace})
    redis = orchestrator_redis(run)
    # Fresh Redis state per pass so every pass does the same work.
    keys = CustomerKeys(f"{run.namespace}-{uuid.uuid4().hex[:6]}")
    producer = make_producer(run)
    consumer = make_consumer(
        run,
        group_id=f"safar-{uuid.uuid4().hex}",
        fetch_max_wait_ms=run.kafka_fetch_max_wait_ms,
    )
    await producer.start()
    await consumer.start()
    active = ActiveConfig()
    active.update(demo_snapshot())
    worker = EventConsumer(
        run,
        consumer,
        producer,
        ProfileStore(redis, keys),
        WaitIndex(redis, keys, run.timer_shards),
        EventsProgress(redis, keys),
        active,
    )
    worker.subscribe()
    task = asyncio.create_task(worker.run())
    try:
        while worker.records_done == 0:  # noqa: ASYNC110 - sampling a counter, not an event
            await asyncio.sleep(0.001)
        watch, cpu = Stopwatch(), time.process_time()
        first = worker.records_done
        while worker.records_done < count:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        done = count - first
        return Pass(done / watch.seconds(), (time.process_time() - cpu) / done * 1e6)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


async def run(
    settings: Settings, count: int = 60_000, customers: int = 5_000, rounds: int = 3
) -> Result:
    await ensure_topics(settings)
    with console.status(f"producing {count:,} demo events for {customers:,} customers..."):
        await _produce(settings, count, customers)
    tune_gc()  # as `safar orchestrator` does once started; both loops run with it
    result = Result([], [], [], [])
    for round_ in range(1, rounds + 1):
        with console.status(f"round {round_}/{rounds}: raw limit..."):
            raw = await _raw_pass(settings, count)
        with console.status(f"round {round_}/{rounds}: safar events loop..."):
            safar = await _safar_pass(settings, count)
        result.raw.append(raw.events_per_s)
        result.safar.append(safar.events_per_s)
        result.raw_cpu.append(raw.cpu_us_per_event)
        result.safar_cpu.append(safar.cpu_us_per_event)
        console.print(
            f"round {round_}: raw {raw.events_per_s:,.0f} ev/s ({raw.cpu_us_per_event:.0f} µs "
            f"CPU/event), safar {safar.events_per_s:,.0f} ev/s "
            f"({safar.cpu_us_per_event:.0f} µs CPU/event)"
        )
    return result
