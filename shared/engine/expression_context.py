"""What CEL sees while one event is processed: ``event``, ``customer``, ``trigger``, ``now``
and the helpers ``count(name)`` and ``days_since(name)``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cel

from shared.events import Event
from shared.profile import Profile

NEVER_DAYS = 100_000  # days_since() of something the customer never did


class ExpressionFailed(RuntimeError):
    """A rule expression failed at run time (e.g. a missing key); recorded against the rule."""

    retriable = False


def event_view(event: Event) -> dict[str, Any]:
    """The event as expressions and templates see it."""
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


_FIELD = re.compile(r"\b(event|customer|trigger)\s*\.\s*([A-Za-z_]\w*)")
_BARE = re.compile(r"\b(event|customer|trigger)\b(?!\s*\.)")


@dataclass(frozen=True, slots=True)
class ContextShape:
    """Which fields of ``event``/``customer``/``trigger`` any expression reads (None: all).

    Handing CEL a value costs about a microsecond per key, so a context carries only what
    the configuration's expressions can see; ``customer`` is left out when none reads it.
    """

    fields: dict[str, frozenset[str] | None]

    @classmethod
    def of(cls, sources: Iterable[str]) -> ContextShape:
        fields: dict[str, set[str] | None] = {"event": set(), "customer": set(), "trigger": set()}
        for source in sources:
            for name, attribute in _FIELD.findall(source):
                found = fields[name]
                if found is not None:
                    found.add(attribute)
            for name in _BARE.findall(source):
                fields[name] = None  # passed whole, e.g. `size(customer)`
        return cls({k: None if v is None else frozenset(v) for k, v in fields.items()})

    def cut(self, name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
        wanted = self.fields[name]
        if value is None or wanted is None:
            return value
        return {k: value[k] for k in wanted if k in value}


EVERYTHING = ContextShape({"event": None, "customer": None, "trigger": None})


def make_context(
    event: dict[str, Any] | None,
    profile: Profile,
    now: datetime,
    trigger: dict[str, Any] | None = None,
    shape: ContextShape = EVERYTHING,
) -> cel.Context:
    """One context per evaluation site; compiled programs then run in microseconds."""
    now_s = now.timestamp()

    def count(name: str) -> int:
        return profile.counts.get(name, 0)

    def days_since(name: str) -> int:
        last = profile.last_at.get(name)
        return NEVER_DAYS if last is None else int((now_s - last) // 86400)

    variables: dict[str, Any] = {"event": shape.cut("event", event), "now": now}
    if shape.fields["customer"] != frozenset():
        variables["customer"] = shape.cut("customer", profile.view())
    if trigger is not None:
        variables["trigger"] = shape.cut("trigger", trigger)
    return cel.Context(variables=variables, functions={"count": count, "days_since": days_since})


def holds(program: cel.Program | None, context: cel.Context) -> bool:
    """Evaluate a stage condition; a missing key or a type error counts as false."""
    if program is None:
        return True
    try:
        return program.execute(context) is True
    except (KeyError, RuntimeError, TypeError, ValueError):
        return False


def evaluate(program: cel.Program, context: cel.Context) -> Any:
    """Evaluate a rule expression; failures become :class:`ExpressionFailed`."""
    try:
        return program.execute(context)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ExpressionFailed(reason) from None
