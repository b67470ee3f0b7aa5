"""The embedded broker's CPU for one topic's traffic at two partition counts, side by side.

The traffic is roughly what ``safar.history`` receives at 1,000 events/s (counted on the
clients during the latency benchmark): the events loop ~41 produces/s of ~40 records, the
timer loop ~10/s of ~33, the dispatcher ~100/s of ~7; one group member fetches it as the
api's recorder does. Each round gives every partition count a fresh topic, in turn, so
machine noise reaches both; the result is the broker's CPU while the traffic ran.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console

from bench.harness import cpu_seconds, embedded_servers
from shared.kafka import make_consumer, make_producer, send_batches
from shared.settings import Settings

console = Console(stderr=True)
# (records per produce, produces per second) of each writer.
WRITERS = ((40, 41.0), (33, 10.0), (7, 100.0))
RECORD = b"h" * 250  # about a history record's size


@dataclass
class Result:
    broker_cpu: dict[int, list[float]]  # partitions -> share of a core, one per round
    consumed_per_s: dict[int, list[float]]


async def _create(settings: Settings, partitions: int) -> str:
    topic = f"{settings.namespace}.partitions-{partitions}-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require("kafka_bootstrap"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _write(producer: AIOKafkaProducer, topic: str, per: int, rate: float) -> None:
    started = time.perf_counter()
    sent = 0
    while True:
        records = [(f"c{(sent * per + i) % 5000}".encode(), RECORD) for i in range(per)]
        sent += 1
        await asyncio.gather(*await send_batches(producer, topic, records))
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))


async def _round(settings: Settings, partitions: int, seconds: float) -> tuple[float, float]:
    """The broker's share of a core and the records fetched per second, for one topic."""
    topic = await _create(settings, partitions)
    producers = [make_producer(settings) for _ in WRITERS]
    consumer = make_consumer(settings, topic, group_id=f"recorder-{uuid.uuid4().hex[:6]}")
    for client in (*producers, consumer):
        await client.start()
    fetched = 0

    async def fetch() -> None:
        nonlocal fetched
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            fetched += sum(len(records) for records in batch.values())
            if batch:
                await consumer.commit()

    tasks = [asyncio.create_task(fetch())] + [
        asyncio.create_task(_write(producer, topic, per, rate))
        for producer, (per, rate) in zip(producers, WRITERS, strict=True)
    ]
    try:
        await asyncio.sleep(1)  # the group joined, the writers under way
        broker = embedded_servers()["kafka"]
        cpu_before, fetched_before, started = cpu_seconds(broker), fetched, time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        return (cpu_seconds(broker) - cpu_before) / elapsed, (fetched - fetched_before) / elapsed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (consumer, *producers):
            await client.stop()


async def run(settings: Settings, counts: tuple[int, int], seconds: float, rounds: int) -> Result:
    result = Result({n: [] for n in counts}, {n: [] for n in counts})
    with console.status("") as status:
        for number in range(1, rounds + 1):
            for partitions in counts:
                status.update(f"round {number}/{rounds}: {partitions} partitions, {seconds:.0f}s")
                cpu, fetched = await _round(settings, partitions, seconds)
                result.broker_cpu[partitions].append(cpu)
                result.consumed_per_s[partitions].append(fetched)
    return result
