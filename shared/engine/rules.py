"""Rules triggered by an event or by the stages it entered (indexed: no scan of all rules)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.engine.compiled import CompiledConfig, CompiledRule, evaluation_order
from shared.engine.effects import Effects, RuleOutcome
from shared.engine.expression_context import ExpressionFailed, Scope, evaluate
from shared.engine.firing import decide_send
from shared.engine.stage_machine import Transition
from shared.engine.waits import schedule_wait
from shared.events import Event
from shared.profile import Profile


def triggered_rules(
    event: Event, transitions: list[Transition], config: CompiledConfig
) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    if event.type == "track" and event.name:
        rules.extend(config.by_event.get(event.name, ()))
    for move in transitions:
        rules.extend(config.by_stage.get((move.journey, move.to_stage), ()))
    if transitions and len(rules) > 1:  # each index is in order; together they must be too
        rules.sort(key=evaluation_order)
    return rules


def apply_rule(
    profile: Profile,
    rule: CompiledRule,
    event: Event,
    event_view: dict[str, Any],
    scope: Scope,
    now: datetime,
    effects: Effects,
) -> None:
    """Condition, then a wait or an immediate send."""
    if rule.condition is not None:
        try:
            if evaluate(rule.condition, scope) is not True:
                return
        except ExpressionFailed as exc:
            effects.rule_outcomes.append(
                RuleOutcome(rule.key, rule.version, "error", event.message_id, detail=f"if: {exc}")
            )
            return
    effects.rule_outcomes.append(RuleOutcome(rule.key, rule.version, "triggered", event.message_id))
    if rule.definition.wait is not None:
        schedule_wait(profile, rule, event, event_view, scope, effects)
        return
    decide_send(
        profile,
        rule,
        cause=event.message_id,
        trigger=event_view,
        trigger_received_at=event.received_at,
        now=now,
        effects=effects,
    )
