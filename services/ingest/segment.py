"""Segment-shaped messages -> normalized events (DESIGN §5). Pure: no I/O, time is an input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.events import CONTROL_CHARACTERS, Event, EventType, format_time

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_EVENTS = 2500
_HEADROOM = 16
_MAX_DEPTH = 254 - _HEADROOM  # orjson.dumps writes at most 254 levels


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
EVENT_TYPES: dict[str, EventType] = {kind: kind for kind in ROUTE_TYPES.values()}


class InvalidMessage(ValueError):
    """A message that cannot become an event; the reason is safe to show the sender."""

    retriable = False

    def __init__(self, reason: str, code: str = "invalid_event") -> None:
        super().__init__(reason)
        self.code = code


def type_label(message: object) -> str:
    """A bounded metrics label for a message's declared type."""
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else "unknown"


def _id(message: dict[str, Any], field: str) -> str | None:
    """An id field as a string; null and blank strings count as absent, numbers are spelled.
    Control characters are refused: Safar's keys use two of them as separators."""
    value = message.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        if CONTROL_CHARACTERS.search(value):
            raise InvalidMessage(f"{field} must not contain control characters")
        return value if value.strip() else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidMessage(f"{field} must be a string")


def _inside_headroom(message: dict[str, Any]) -> list[Any]:
    wrapped: list[Any] = [message]
    for _ in range(_HEADROOM - 1):
        wrapped = [wrapped]
    return wrapped


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(f"{field} must be an object")
    return value


def parse_timestamp(value: object, field: str) -> datetime | None:
    """An ISO-8601 time (``Z`` allowed, no zone means UTC); absent or null gives None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"{field} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidMessage(f"{field} is not an ISO-8601 time: {value[:40]!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def event_time(message: dict[str, Any], received_at: datetime) -> datetime:
    """``receivedAt - (sentAt - originalTimestamp)`` corrects the sender's clock skew."""
    original = parse_timestamp(
        message.get("originalTimestamp") or message.get("timestamp"), "timestamp"
    )
    sent_at = parse_timestamp(message.get("sentAt"), "sentAt")
    if original is None:
        return received_at
    if sent_at is None:
        return original
    try:
        return received_at - (sent_at - original)
    except OverflowError:
        raise InvalidMessage("timestamp and sentAt are too far apart") from None


def normalize(
    message: object,
    *,
    type_hint: EventType | None,
    received_at: datetime,
    batch: dict[str, Any] | None = None,
) -> Event:
    """Validate one message and build the event; raises :class:`InvalidMessage`.

    ``type_hint`` is the type of a single-message route; batch items name their own.
    ``batch`` is the enclosing batch body, whose ``context``/``integrations`` items inherit.
    """
    if not isinstance(message, dict):
        raise InvalidMessage("each message must be a JSON object")
    declared = message.get("type")
    kind = type_hint or (EVENT_TYPES.get(declared) if isinstance(declared, str) else None)
    if kind is None:
        raise InvalidMessage(f"type must be one of {', '.join(sorted(EVENT_TYPES))}")
    if batch:
        message = _with_batch_defaults(message, batch)
    # The limit applies to the event as stored, batch-level context included. orjson reads
    # 1,024 levels but writes 254, and Safar stores an event inside a few more (a wait's
    # trigger in a profile, an action): encoding it inside _HEADROOM lists checks that
    # every one of those can be written, at the cost of the size check alone.
    try:
        size = len(orjson.dumps(_inside_headroom(message))) - 2 * _HEADROOM
    except orjson.JSONEncodeError:
        raise InvalidMessage(f"the event nests more than {_MAX_DEPTH} levels deep") from None
    if size > MAX_EVENT_BYTES:
        raise InvalidMessage(
            f"the event is {size} bytes; the limit is {MAX_EVENT_BYTES}", "event_too_large"
        )
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
        raw = message.get("name")
        if raw is None:
            raw = properties.get("name")
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
    received = format_time(received_at)
    try:
        moment = event_time(message, received_at)
        # Most events carry no time of their own: spell the arrival once.
        timestamp = received if moment is received_at else format_time(moment)
    except OverflowError:
        raise InvalidMessage("timestamp is out of range") from None
    return Event(
        message_id=message_id,
        type=kind,
        customer_id=user_id or anonymous_id or "",
        timestamp=timestamp,
        received_at=received,
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
        shared, own = batch.get(field), message.get(field)
        if not isinstance(shared, dict):
            continue
        if own is None:
            merged[field] = dict(shared)
        elif isinstance(own, dict):
            merged[field] = {**shared, **own}
    if merged.get("sentAt") is None and batch.get("sentAt") is not None:
        merged["sentAt"] = batch["sentAt"]
    return merged
