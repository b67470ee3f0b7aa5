"""A customer's profile as stored in Redis: written by the orchestrator, read by the api.

Everything the engine needs to decide about one customer lives in this one record (stages,
pending waits, recent fires for frequency limits, open goals), so one compare-and-set
makes an event's effects atomic.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson


@dataclass(slots=True)
class StageState:
    stage: str
    since: str


class ProfileDecodeError(ValueError):
    """A value in Redis that does not read as a profile (no writer of Safar's makes one)."""


@dataclass(slots=True)
class PendingWait:
    """A scheduled action. ``due`` = deadline + grace (or the end of quiet hours).

    The timer loop publishes a due wait's action first and removes the wait after; a crash
    in between fires it again with the same action id, which the dispatcher skips."""

    rule: str
    rule_version: int
    key: str
    deadline: float  # epoch seconds; an `unless` event stamped before it cancels the wait
    due: float  # epoch seconds when the timer loop fires it
    cause: str  # trigger event id or wait key: part of the action id
    trigger: dict[str, Any] | None
    trigger_received_at: str | None = None

    @property
    def member(self) -> str:
        return f"{self.rule}\x1f{self.key}"


@dataclass(slots=True)
class OpenGoal:
    """An action (sent or held out) waiting for its goal event until ``until``."""

    rule: str
    action_id: str
    group: Literal["treated", "holdout"]
    event: str
    until: float
    trigger: dict[str, Any] | None = None
    since: float = 0.0  # goal events stamped before this (when the action went) do not count


_FIELDS: dict[type, frozenset[str]] = {}


def _known(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the fields a newer version of Safar added: a profile it wrote reads
    here (and loses only those) instead of being set aside as unreadable."""
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = frozenset(f.name for f in fields(kind))
    if data.keys() <= names:
        return data
    return {name: value for name, value in data.items() if name in names}


@dataclass(slots=True)
class Profile:
    """What Safar knows of one customer. ``seen`` and ``offsets`` make replays harmless."""

    id: str
    traits: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    last_at: dict[str, int] = field(default_factory=dict)  # event name -> epoch seconds
    revenue: float = 0.0
    first_seen: str | None = None
    last_seen: str | None = None
    stages: dict[str, StageState] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # tags of recent message ids, oldest first
    offsets: dict[str, int] = field(default_factory=dict)  # partition -> last applied offset
    waits: list[PendingWait] = field(default_factory=list)
    fires: dict[str, list[float]] = field(default_factory=dict)  # rule -> recent fire times
    goals: list[OpenGoal] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # anonymous ids merged into this profile
    known: bool = False  # an event named this id as its userId: never merged into another

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_OMIT_MICROSECONDS)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Profile:
        """Raises :class:`ProfileDecodeError` for anything that is not a stored profile."""
        try:
            data = orjson.loads(raw)
            data["stages"] = {
                j: StageState(**_known(StageState, s)) for j, s in data.get("stages", {}).items()
            }
            data["waits"] = [PendingWait(**_known(PendingWait, w)) for w in data.get("waits", ())]
            data["goals"] = [OpenGoal(**_known(OpenGoal, g)) for g in data.get("goals", ())]
            return cls(**_known(cls, data))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ProfileDecodeError(f"not a stored profile: {exc}") from exc

    def find_wait(self, rule: str, key: str) -> PendingWait | None:
        return next((w for w in self.waits if w.rule == rule and w.key == key), None)

    def view(self, *, copy: bool = False) -> dict[str, Any]:
        """The profile as rules and the API see it (no bookkeeping fields); ``copy``: one
        that later changes of the profile leave as it is."""
        return {
            "id": self.id,
            "traits": dict(self.traits) if copy else self.traits,
            "counts": dict(self.counts) if copy else self.counts,
            "revenue": self.revenue,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "stages": {j: {"stage": s.stage, "since": s.since} for j, s in self.stages.items()},
        }

    def waits_view(self) -> list[dict[str, Any]]:
        """Pending waits as the customer API shows them."""
        return [
            {
                "rule": w.rule,
                "key": w.key,
                "due": datetime.fromtimestamp(w.due, UTC).isoformat(),
            }
            for w in sorted(self.waits, key=lambda w: w.due)
        ]
