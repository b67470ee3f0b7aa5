"""Segment-shaped messages -> normalized events (DESIGN §5). Pure: no I/O, time is an input."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.events import Event, EventType, format_time

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_EVENTS = 2500

# The one-letter routes of @segment/analytics-next.
ROUTE_TYPES: dict[str, EventType] = {
    "track": "track",
    "t": "track",
    "identify": "identify",
    "i": "identify",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
}
_TYPES = frozenset(ROUTE_TYPES.values())


class InvalidMessage(ValueError):
    """A message that cannot become an event; the reason is safe to show the sender."""

    retriable = False


def _id(message: dict[str, Any], field: str) -> str | None:
    """An id field as a string; null, empty and non-scalar values count as absent."""
    value = message.get(field)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, str):
        return None
    raise InvalidMessage(f"{field} must be a string")


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(f"{field} must be an object")
    return value


def parse_timestamp(value: object, field: str) -> datetime | None:
    """An ISO-8601 time (``Z`` allowed); absent or null gives None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"{field} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidMessage(f"{field} is not an ISO-8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise InvalidMessage(f"{field} must carry a timezone, e.g. 2026-01-01T10:00:00Z")
    return moment


def event_time(message: dict[str, Any], received_at: datetime) -> datetime:
    """``receivedAt - (sentAt - originalTimestamp)`` corrects the sender's clock skew."""
    original = parse_timestamp(
        message.get("originalTimestamp", message.get("timestamp")), "timestamp"
    )
    sent_at = parse_timestamp(message.get("sentAt"), "sentAt")
    if original is None:
        return received_at
    if sent_at is None:
        return original
    return received_at - (sent_at - original)


def normalize(
    message: object,
    *,
    type_hint: EventType | None,
    received_at: datetime,
    batch: dict[str, Any] | None = None,
    size: int | None = None,
) -> Event:
    """Validate one message and build the event; raises :class:`InvalidMessage`."""
    if not isinstance(message, dict):
        raise InvalidMessage("each message must be a JSON object")
    if size is not None and size > MAX_EVENT_BYTES:
        raise InvalidMessage(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
    kind = type_hint or message.get("type")
    if kind not in _TYPES:
        raise InvalidMessage(f"type must be one of {', '.join(sorted(_TYPES))}")
    if batch:
        message = _with_batch_defaults(message, batch)
    user_id = _id(message, "userId")
    anonymous_id = _id(message, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidMessage("userId or anonymousId is required")
    context = _object(message, "context")
    properties = _object(message, "properties")
    traits = _object(message, "traits") or _object(context, "traits")
    name: str | None = None
    group_id = previous_id = None
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidMessage("track needs an `event` name")
    elif kind in ("page", "screen"):
        raw = message.get("name", properties.get("name"))
        name = raw if isinstance(raw, str) else None
    elif kind == "group":
        group_id = _id(message, "groupId")
        if group_id is None:
            raise InvalidMessage("group needs a `groupId`")
    elif kind == "alias":
        previous_id = _id(message, "previousId")
        if previous_id is None or user_id is None:
            raise InvalidMessage("alias needs `previousId` and `userId`")
    message_id = _id(message, "messageId") or str(uuid.uuid4())
    return Event(
        message_id=message_id,
        type=kind,
        customer_id=user_id or anonymous_id or "",
        timestamp=format_time(event_time(message, received_at)),
        received_at=format_time(received_at),
        user_id=user_id,
        anonymous_id=anonymous_id,
        name=name,
        properties=properties,
        traits=traits,
        context=context,
        group_id=group_id,
        previous_id=previous_id,
    )


def _with_batch_defaults(message: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """Batch-level ``context``, ``integrations`` and ``sentAt`` under each item's own."""
    merged = dict(message)
    for field in ("context", "integrations"):
        shared = batch.get(field)
        if isinstance(shared, dict):
            own = message.get(field)
            merged[field] = {**shared, **own} if isinstance(own, dict) else dict(shared)
    if "sentAt" not in merged and batch.get("sentAt") is not None:
        merged["sentAt"] = batch["sentAt"]
    return merged
