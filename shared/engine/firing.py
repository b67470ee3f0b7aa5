"""Deciding a send: holdout, frequency limit, quiet hours, then the action itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.actions import ActionRecord, action_id
from shared.engine.compiled import CompiledRule
from shared.engine.effects import Effects, RuleOutcome
from shared.engine.policies import in_holdout, over_limit, quiet_until, record_fire
from shared.events import format_time
from shared.profile import OpenGoal, PendingWait, Profile


def build_action(
    rule: CompiledRule,
    profile: Profile,
    aid: str,
    trigger: dict[str, Any] | None,
    trigger_received_at: str | None,
    now: datetime,
) -> ActionRecord:
    return ActionRecord(
        action_id=aid,
        rule=rule.key,
        rule_version=rule.version,
        customer_id=profile.id,
        channel=rule.definition.action.channel,
        spec=rule.record_spec,
        customer=profile.view(copy=True),  # later events of the batch change the profile
        trigger=trigger,
        created_at=format_time(now),
        trigger_received_at=trigger_received_at,
    )


def _open_goal(
    profile: Profile,
    rule: CompiledRule,
    aid: str,
    group: str,
    trigger: Any,
    now: datetime,
    wait: PendingWait | None,
) -> None:
    goal = rule.definition.goal
    if goal is None:
        return
    until = now.timestamp() + goal.within.total_seconds()
    profile.goals.append(
        OpenGoal(rule.key, aid, group, goal.event, until, trigger, _sent_at(trigger, wait))  # type: ignore[arg-type]
    )


def _sent_at(trigger: dict[str, Any] | None, wait: PendingWait | None) -> float:
    """When, in the events' own time, the action went (or would have): its wait's due time,
    else its trigger's timestamp. A goal event stamped earlier did not follow it."""
    if wait is not None:
        return wait.due
    stamp = trigger.get("timestamp") if trigger else None
    try:
        return datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0.0
    except ValueError:
        return 0.0


def decide_send(
    profile: Profile,
    rule: CompiledRule,
    *,
    cause: str,
    trigger: dict[str, Any] | None,
    trigger_received_at: str | None,
    now: datetime,
    effects: Effects,
    wait: PendingWait | None = None,
) -> str:
    """Fire, hold out, suppress or defer; returns which. ``wait`` is the timer being fired:
    it is removed unless deferred. A fired action is appended to ``effects.actions``."""
    definition = rule.definition
    aid = action_id(rule.key, rule.version, profile.id, cause)
    now_s = now.timestamp()

    def outcome(kind: Any, detail: str | None = None) -> None:
        effects.rule_outcomes.append(RuleOutcome(rule.key, rule.version, kind, cause, aid, detail))

    if in_holdout(profile.id, rule.key, definition.holdout):
        outcome("held_out")
        _open_goal(profile, rule, aid, "holdout", trigger, now, wait)
        _drop(profile, wait)
        return "held_out"
    if over_limit(profile, rule.key, definition.limits, now_s):
        limits = definition.limits
        assert limits is not None
        outcome("suppressed", f"limit of {limits.max} per {limits.per} reached")
        _drop(profile, wait)
        return "suppressed"
    until = quiet_until(definition.quiet_hours, profile, now)
    if until is not None:
        due = until.astimezone(UTC).timestamp()
        if wait is not None:
            wait.due = due
        else:
            profile.waits.append(
                PendingWait(
                    rule=rule.key,
                    rule_version=rule.version,
                    key=f"quiet:{cause}",
                    deadline=due,
                    due=due,
                    cause=cause,
                    trigger=trigger,
                    trigger_received_at=trigger_received_at,
                )
            )
        outcome("scheduled", f"quiet hours: deferred to {format_time(until)}")
        return "deferred"
    record_fire(profile, rule.key, definition.limits, now_s)
    _open_goal(profile, rule, aid, "treated", trigger, now, wait)
    outcome("fired")
    _drop(profile, wait)
    effects.actions.append(build_action(rule, profile, aid, trigger, trigger_received_at, now))
    return "fired"


def _drop(profile: Profile, wait: PendingWait | None) -> None:
    if wait is not None:
        profile.waits.remove(wait)
