"""What CEL sees while one event is processed: ``event``, ``customer``, ``now``, helpers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cel

from shared.events import Event
from shared.profile import Profile

NEVER_DAYS = 100_000  # days_since() of something the customer never did


def event_view(event: Event) -> dict[str, Any]:
    """The event as expressions see it."""
    return {
        "name": event.name,
        "type": event.type,
        "message_id": event.message_id,
        "user_id": event.user_id,
        "anonymous_id": event.anonymous_id,
        "properties": event.properties,
        "traits": event.traits,
        "context": event.context,
        "timestamp": event.timestamp,
    }


def make_context(event: Event, profile: Profile, now: datetime) -> cel.Context:
    """One context per event; compiled programs then evaluate against it in microseconds."""
    now_s = now.timestamp()

    def count(name: str) -> int:
        return profile.counts.get(name, 0)

    def days_since(name: str) -> int:
        last = profile.last_at.get(name)
        return NEVER_DAYS if last is None else int((now_s - last) // 86400)

    return cel.Context(
        variables={"event": event_view(event), "customer": profile.view(), "now": now},
        functions={"count": count, "days_since": days_since},
    )


def holds(program: cel.Program | None, context: cel.Context) -> bool:
    """Evaluate a condition; a missing key or a type error counts as false."""
    if program is None:
        return True
    try:
        return program.execute(context) is True
    except (KeyError, RuntimeError, TypeError, ValueError):
        return False
