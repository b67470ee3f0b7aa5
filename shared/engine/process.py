"""The pure core: ``(profile, event, definitions, now) -> (profile, transitions, effects)``.

Evaluation order (DESIGN §6): profile -> stages -> cancel waits whose ``unless`` matches ->
goals reached -> rules triggered by the event or the stages entered -> schedule or send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.engine.compiled import CompiledConfig
from shared.engine.effects import Effects
from shared.engine.expression_context import Scope, event_view
from shared.engine.goals import drop_expired_goals, record_conversions
from shared.engine.profile import already_applied, apply_event, seen_tag
from shared.engine.rules import apply_rule, triggered_rules
from shared.engine.stage_machine import Transition, move_stages
from shared.engine.waits import cancel_waits
from shared.events import Event
from shared.profile import Profile


@dataclass(slots=True)
class Outcome:
    """What one event did. ``applied`` is False for a replayed or duplicate event."""

    profile: Profile
    event: Event
    applied: bool
    transitions: list[Transition] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)


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
    """Apply one event to the profile (in place) and decide its effects."""
    tag = seen_tag(event.message_id)
    if profile is None:
        profile = Profile(id=event.customer_id)
    elif already_applied(profile, tag, partition, offset):
        return Outcome(profile, event, applied=False)
    apply_event(profile, event, partition, offset, dedupe_window, tag)
    view = event_view(event)
    scope = Scope(view, profile, now, shape=config.shape)
    transitions = move_stages(profile, config.journeys, scope, event.timestamp)
    effects = Effects()
    cancel_waits(profile, event, view, config, now, effects)
    if config.goal_events and event.name in config.goal_events:
        record_conversions(profile, event, view, config, now, effects)
    elif profile.goals:
        drop_expired_goals(profile, now)
    rules = triggered_rules(event, transitions, config)
    if rules:
        if transitions and config.shape.fields["customer"] != frozenset():
            # Rules see the stages just entered.
            scope = Scope(view, profile, now, shape=config.shape)
        for rule in rules:
            apply_rule(profile, rule, event, view, scope, now, effects)
    return Outcome(profile, event, applied=True, transitions=transitions, effects=effects)
