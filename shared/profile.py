"""A customer's profile as stored in Redis: written by the orchestrator, read by the api."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class StageState:
    stage: str
    since: str


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

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Profile:
        data = orjson.loads(raw)
        data["stages"] = {j: StageState(**s) for j, s in data.get("stages", {}).items()}
        return cls(**data)

    def view(self) -> dict[str, Any]:
        """The profile as rules and the API see it (no bookkeeping fields)."""
        return {
            "id": self.id,
            "traits": self.traits,
            "counts": self.counts,
            "revenue": self.revenue,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "stages": {j: {"stage": s.stage, "since": s.since} for j, s in self.stages.items()},
        }
