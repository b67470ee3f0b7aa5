"""Waits: scheduling, cancelling by ``unless`` the moment the event is processed, firing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.engine.compiled import CompiledConfig, CompiledRule
from shared.engine.effects import Effects, RuleOutcome
from shared.engine.expression_context import ExpressionFailed, Scope, evaluate
from shared.engine.firing import decide_send
from shared.events import Event
from shared.profile import PendingWait, Profile


def schedule_wait(
    profile: Profile,
    rule: CompiledRule,
    event: Event,
    event_view: dict[str, Any],
    scope: Scope,
    effects: Effects,
) -> None:
    """One pending wait per (rule, customer, key). A repeat keeps the first deadline, so a
    customer who keeps adding to the same cart is nudged 30m after the first add."""
    wait = rule.definition.wait
    assert wait is not None
    key = ""
    if rule.wait_key is not None:
        try:
            key = str(evaluate(rule.wait_key, scope))
        except ExpressionFailed as exc:
            effects.rule_outcomes.append(
                RuleOutcome(
                    rule.key, rule.version, "error", event.message_id, detail=f"wait.key: {exc}"
                )
            )
            return
    if profile.find_wait(rule.key, key) is not None:
        return
    start = datetime.fromisoformat(event.timestamp).timestamp()
    deadline = start + wait.for_.total_seconds()
    profile.waits.append(
        PendingWait(
            rule=rule.key,
            rule_version=rule.version,
            key=key,
            deadline=deadline,
            due=deadline + wait.grace.total_seconds(),
            # The key keeps one wait per cart; the trigger tells this wait from a later one
            # for the same key (a cart abandoned again after its nudge), as action ids must.
            cause=f"wait:{key}:{event.message_id}" if key else event.message_id,
            trigger=event_view,
            trigger_received_at=event.received_at,
        )
    )
    effects.rule_outcomes.append(
        RuleOutcome(rule.key, rule.version, "scheduled", event.message_id, detail=key or None)
    )


def cancel_waits(
    profile: Profile,
    event: Event,
    event_view: dict[str, Any],
    config: CompiledConfig,
    now: datetime,
    effects: Effects,
) -> None:
    """Remove every pending wait this event's ``unless`` matches, stamped before its deadline
    and received before the wait fell due (deadline + grace)."""
    if not profile.waits or event.type != "track":
        return
    rules = config.by_unless.get(event.name, ())
    if not rules:
        return
    stamped = datetime.fromisoformat(event.timestamp).timestamp()
    received = datetime.fromisoformat(event.received_at).timestamp()
    for rule in rules:
        for wait in [w for w in profile.waits if w.rule == rule.key]:
            if stamped > wait.deadline:
                continue  # bought after the nudge was due: the nudge stands
            if received > wait.due:
                # Reached Safar after the wait fell due: it is the timer loop's to fire, and
                # may be on its way already (a cancel now would race the send).
                continue
            if rule.unless_match is not None:
                scope = Scope(event_view, profile, now, wait.trigger, config.shape)
                try:
                    if evaluate(rule.unless_match, scope) is not True:
                        continue
                except ExpressionFailed as exc:
                    effects.rule_outcomes.append(
                        RuleOutcome(
                            rule.key,
                            rule.version,
                            "error",
                            wait.cause,
                            detail=f"wait.unless.match: {exc}",
                        )
                    )
                    continue
            profile.waits.remove(wait)
            effects.rule_outcomes.append(
                RuleOutcome(
                    rule.key,
                    rule.version,
                    "cancelled",
                    wait.cause,
                    detail=f"{event.name} {event.message_id}",
                )
            )


def fire_wait(
    profile: Profile, rule_key: str, key: str, config: CompiledConfig, now: datetime
) -> Effects:
    """The timer loop's decision for one due wait, in place: removed when it fires, is held
    out or suppressed; moved when quiet hours defer it; left alone when not yet due."""
    effects = Effects()
    wait = profile.find_wait(rule_key, key)
    if wait is None:
        return effects  # cancelled or fired already: the timer entry is stale
    rule = config.rules.get(rule_key)
    if rule is None:
        profile.waits.remove(wait)
        effects.rule_outcomes.append(
            RuleOutcome(
                rule_key,
                wait.rule_version,
                "cancelled",
                wait.cause,
                detail="rule removed or disabled",
            )
        )
        return effects
    if wait.due <= now.timestamp():
        decide_send(
            profile,
            rule,
            cause=wait.cause,
            trigger=wait.trigger,
            trigger_received_at=wait.trigger_received_at,
            now=now,
            effects=effects,
            wait=wait,
        )
    return effects
