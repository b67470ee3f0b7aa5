"""Dead letters on ``safar.dlq``: the original record with why it failed; never dropped."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from shared.events import format_time

DLQ_SCHEMA = 1

# One counter for every service that dead-letters (events, actions, history records);
# defined once so a process importing two services' metrics registers it once.
DEAD_LETTERS = Counter("safar_dlq_total", "Records sent to safar.dlq", ["kind"])


async def dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    kind: str,
    key: bytes | None,
    value: bytes,
    error: str,
    source: str,
    attempts: int = 1,
) -> None:
    """Produce one dead letter and wait for Kafka's acknowledgement."""
    letter: dict[str, object] = {
        "schema": DLQ_SCHEMA,
        "kind": kind,
        "source": source,
        "error": error,
        "attempts": attempts,
        "failed_at": format_time(datetime.now(UTC)),
    }
    try:
        encoded = orjson.dumps(letter | {"original": orjson.loads(value)})
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        # Not JSON, or nested deeper than orjson writes (it reads 1,024 levels, writes 254).
        encoded = orjson.dumps(letter | {"original": {"base64": base64.b64encode(value).decode()}})
    await producer.send_and_wait(topic, encoded, key=key)
