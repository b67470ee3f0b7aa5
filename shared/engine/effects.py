"""What the engine decided, for the I/O layer to publish: nothing here touches Kafka."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.actions import ActionRecord

RuleOutcomeKind = Literal[
    "triggered", "scheduled", "cancelled", "suppressed", "held_out", "fired", "error"
]


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule: str
    rule_version: int
    outcome: RuleOutcomeKind
    cause: str  # the trigger event id or wait key this outcome is about
    action_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Conversion:
    rule: str
    action_id: str
    group: Literal["treated", "holdout"]
    event_id: str


@dataclass(slots=True)
class Effects:
    rule_outcomes: list[RuleOutcome] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)
