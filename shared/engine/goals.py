"""Goals: a later event attributed to an action (sent or held out) -> a conversion."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.engine.compiled import CompiledConfig
from shared.engine.effects import Conversion, Effects, RuleOutcome
from shared.engine.expression_context import ExpressionFailed, Scope, evaluate
from shared.events import Event
from shared.profile import Profile


def record_conversions(
    profile: Profile,
    event: Event,
    event_view: dict[str, Any],
    config: CompiledConfig,
    now: datetime,
    effects: Effects,
) -> None:
    """Close the open goals this event reaches; drop the ones past their window."""
    if not profile.goals:
        return
    stamped = datetime.fromisoformat(event.timestamp).timestamp()
    keep = []
    for goal in profile.goals:
        if goal.until < stamped:
            continue
        if event.type != "track" or event.name != goal.event or stamped < goal.since:
            keep.append(goal)
            continue
        rule = config.rules.get(goal.rule)
        if rule is not None and rule.goal_match is not None:
            scope = Scope(event_view, profile, now, goal.trigger, config.shape)
            try:
                matched = evaluate(rule.goal_match, scope) is True
            except ExpressionFailed as exc:
                effects.rule_outcomes.append(
                    RuleOutcome(
                        goal.rule,
                        rule.version,
                        "error",
                        goal.action_id,
                        detail=f"goal.match: {exc}",
                    )
                )
                matched = False
            if not matched:
                keep.append(goal)
                continue
        effects.conversions.append(
            Conversion(goal.rule, goal.action_id, goal.group, event.message_id)
        )
    profile.goals = keep


# How late a goal event stamped inside its window may arrive and still convert.
_LATE_S = 86_400.0


def drop_expired_goals(profile: Profile, now: datetime) -> None:
    """Forget goals whose window ended over a day ago (they would otherwise pile up in the
    profiles of customers who never reach them)."""
    profile.goals = [goal for goal in profile.goals if goal.until >= now.timestamp() - _LATE_S]
