"""The pure core: ``(profile, event, definitions, now) -> (profile, transitions, ...)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.engine.compiled import CompiledConfig
from shared.engine.expression_context import make_context
from shared.engine.profile import already_applied, apply_event
from shared.engine.stage_machine import Transition, move_stages
from shared.events import Event
from shared.profile import Profile


@dataclass(slots=True)
class Outcome:
    """What one event did. ``applied`` is False for a replayed or duplicate event."""

    profile: Profile
    event: Event
    applied: bool
    transitions: list[Transition] = field(default_factory=list)


def process_event(
    profile: Profile | None,
    event: Event,
    config: CompiledConfig,
    now: datetime,
    *,
    partition: int,
    offset: int,
    dedupe_window: int,
) -> Outcome:
    """Apply one event: profile first, then stages (DESIGN §6 evaluation order)."""
    if profile is None:
        profile = Profile(id=event.customer_id)
    elif already_applied(profile, event, partition, offset):
        return Outcome(profile, event, applied=False)
    apply_event(profile, event, partition, offset, dedupe_window)
    context = make_context(event, profile, now)
    transitions = move_stages(profile, config.journeys, context, event.timestamp)
    return Outcome(profile, event, applied=True, transitions=transitions)
