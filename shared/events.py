"""The normalized event on ``safar.events`` (DESIGN §4, §5)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson

EVENT_SCHEMA = 1

EventType = Literal["track", "identify", "page", "screen", "group", "alias"]

_TEXT = ("message_id", "customer_id", "timestamp", "received_at")
_OPTIONAL_TEXT = ("user_id", "anonymous_id", "name", "group_id", "previous_id")
_OBJECTS = ("properties", "traits", "context")
_TYPES: frozenset[str] = frozenset(get_args(EventType))
# Refused in customer ids: Redis keys of Safar separate ids with two of them.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


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
        """Decode a Kafka value; raises :class:`EventDecodeError` for anything else (a
        field of the wrong type included: it would fail every consumer the same way)."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("schema") != EVENT_SCHEMA:
                raise EventDecodeError(f"unsupported event schema: {data!r:.200}")
            event = cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise EventDecodeError(f"not a normalized event: {exc}") from exc
        problem = event._problem()
        if problem is not None:
            raise EventDecodeError(f"not a normalized event: {problem}")
        return event

    def _problem(self) -> str | None:
        for name in _TEXT:
            if type(getattr(self, name)) is not str:
                return f"{name} is not a string"
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                return f"{name} is not a string"
        for name in _OBJECTS:
            if type(getattr(self, name)) is not dict:
                return f"{name} is not an object"
        if self.type not in _TYPES:
            return f"unknown type {self.type!r:.40}"
        if not self.customer_id or CONTROL_CHARACTERS.search(self.customer_id):
            return "customer_id is empty or holds a control character"
        return None


def format_time(moment: datetime) -> str:
    """The one spelling of a time on Safar's topics: UTC, microseconds, so strings sort."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
