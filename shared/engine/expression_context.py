"""What expressions see while one event is processed, and how they are evaluated."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cel

from shared.engine.native import Native, NativeFallback, compile_native
from shared.events import Event
from shared.expressions import compile_expression
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


class Scope:
    """What expressions see at one evaluation site: ``event``, ``customer``, ``trigger``,
    ``now``, ``count(name)`` and ``days_since(name)``.

    The CEL context is built on first use only: expressions of the native subset read the
    event and the profile directly, and most stage conditions are of that subset.
    """

    __slots__ = ("_context", "_now_s", "event", "now", "profile", "shape", "trigger")

    def __init__(
        self,
        event: dict[str, Any],
        profile: Profile,
        now: datetime,
        trigger: dict[str, Any] | None = None,
        shape: ContextShape = EVERYTHING,
    ) -> None:
        self.event = event
        self.profile = profile
        self.now = now
        self.trigger = trigger
        self.shape = shape
        self._now_s = now.timestamp()
        self._context: cel.Context | None = None

    def count(self, name: str) -> int:
        return self.profile.counts.get(name, 0)

    def days_since(self, name: str) -> int:
        last = self.profile.last_at.get(name)
        return NEVER_DAYS if last is None else int((self._now_s - last) // 86400)

    @property
    def context(self) -> cel.Context:
        """One CEL context per scope; compiled programs then run in microseconds."""
        if self._context is None:
            shape = self.shape
            variables: dict[str, Any] = {"event": shape.cut("event", self.event), "now": self.now}
            if shape.fields["customer"] != frozenset():
                variables["customer"] = shape.cut("customer", self.profile.view())
            if self.trigger is not None:
                variables["trigger"] = shape.cut("trigger", self.trigger)
            self._context = cel.Context(
                variables=variables,
                functions={"count": self.count, "days_since": self.days_since},
            )
        return self._context


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression: its CEL program, and a native function when it has one."""

    source: str
    program: cel.Program
    native: Native | None

    @classmethod
    def compile(cls, source: str, field: str) -> Expression:
        """Raises :class:`~shared.expressions.ExpressionError` naming ``field``."""
        return cls(source, compile_expression(source, field), compile_native(source))


def holds(expression: Expression | None, scope: Scope) -> bool:
    """Evaluate a stage condition; a missing key or a type error counts as false."""
    if expression is None:
        return True
    try:
        return evaluate(expression, scope) is True
    except ExpressionFailed:
        return False


def evaluate(expression: Expression, scope: Scope) -> Any:
    """Evaluate a rule expression; failures become :class:`ExpressionFailed`."""
    if expression.native is not None:
        try:
            return expression.native(scope)
        except NativeFallback:
            pass  # a value the native path does not decide: CEL gives the answer
    try:
        return expression.program.execute(scope.context)
    except (ArithmeticError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        # ArithmeticError: division by zero and integer overflow.
        reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ExpressionFailed(reason) from None
