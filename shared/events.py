"""The normalized event on ``safar.events`` (DESIGN §4, §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

EVENT_SCHEMA = 1

EventType = Literal["track", "identify", "page", "screen", "group", "alias"]


class EventDecodeError(ValueError):
    """A record on ``safar.events`` is not a normalized event; never retriable."""

    retriable = False


@dataclass(slots=True)
class Event:
    """One customer event, as ingest produced it. Times are ISO-8601 strings in UTC."""

    message_id: str
    type: EventType
    customer_id: str
    timestamp: str
    received_at: str
    user_id: str | None = None
    anonymous_id: str | None = None
    name: str | None = None  # `event` of a track, `name` of a page or screen
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    previous_id: str | None = None
    schema: int = EVENT_SCHEMA

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        """Decode a Kafka value; raises :class:`EventDecodeError` for anything else."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("schema") != EVENT_SCHEMA:
                raise EventDecodeError(f"unsupported event schema: {data!r:.200}")
            return cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise EventDecodeError(f"not a normalized event: {exc}") from exc


def format_time(moment: datetime) -> str:
    """The one spelling of a time on Safar's topics: UTC, microseconds, so strings sort."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
