"""Events onto ``safar.events``, keyed by customer, answered only once Kafka acknowledged.

Batch requests that arrive within ``linger_s`` of each other are produced together: one
record batch per partition for all of them instead of one per partition per request. The
embedded broker's work grows with the record batches it stores and serves (at 1,000 events/s
in 10-event requests over 12 partitions, its CPU went from 50% of a core to 31% with two
requests per record batch, and to 16% with four: ``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest import metrics
from services.ingest.circuit_breaker import CircuitBreaker
from shared.coalescer import Coalescer
from shared.events import Event
from shared.kafka import send_batches

log = logging.getLogger(__name__)
# A request with this many events is produced at once, alone: it fills its record batches.
_ALONE = 200
Records = list[tuple[bytes, bytes]]


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time, or is known to be down; the client should retry."""

    retriable = True


class EventWriter:
    """Produces with ``acks=all`` under a deadline; fails fast while Kafka is down."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        deadline_s: float,
        breaker: CircuitBreaker,
        linger_s: float,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._deadline_s = deadline_s
        self._breaker = breaker
        self._together = Coalescer(self._produce_together, linger_s=linger_s)
        metrics.KAFKA_AVAILABLE.set(1)

    def admit(self, now: float) -> None:
        """Raise :class:`KafkaUnavailable` at once while the breaker is open."""
        if not self._breaker.allow(now):
            raise KafkaUnavailable("Kafka is unavailable")

    async def write(self, events: Sequence[Event]) -> None:
        """Return once Kafka acknowledged every event; raise :class:`KafkaUnavailable` else."""
        try:
            async with asyncio.timeout(self._deadline_s):
                # Cancelling a delivery future on timeout does not unsend its record; a client
                # retry may duplicate it, which the orchestrator's dedupe by messageId absorbs.
                if len(events) == 1:
                    # The producer lingers, so concurrent single events share a Kafka batch.
                    event = events[0]
                    delivery = await self._producer.send(
                        self._topic, event.to_json(), key=event.customer_id.encode()
                    )
                    await delivery
                else:
                    records = [(e.customer_id.encode(), e.to_json()) for e in events]
                    if len(records) >= _ALONE:
                        await self._produce(records)
                    else:
                        await self._together(records)
        except (KafkaError, TimeoutError) as exc:
            if self._breaker.closed:
                log.warning("Kafka did not acknowledge %d events: %r", len(events), exc)
            self._breaker.failed(time.monotonic())
            metrics.KAFKA_AVAILABLE.set(0)
            raise KafkaUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc
        if not self._breaker.closed:
            log.info("Kafka acknowledges again")
            self._breaker.succeeded()
            metrics.KAFKA_AVAILABLE.set(1)

    async def _produce(self, records: Records) -> None:
        await asyncio.gather(*await send_batches(self._producer, self._topic, records))

    async def _produce_together(self, requests: list[Records]) -> list[None]:
        await self._produce([record for records in requests for record in records])
        return [None] * len(requests)
