"""``POST /v1/rules/{key}/test``: a rule run on a given event and profile, with nothing
stored or sent. It uses the orchestrator's own engine, so what it says is what happens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.actions import ActionRecord, unseal
from shared.definitions import CHANNEL_FIELDS, Bundle, ConfigSnapshot, Rule
from shared.engine.compiled import CompiledConfig
from shared.engine.expression_context import ExpressionFailed, Scope, evaluate, event_view
from shared.engine.process import process_event
from shared.engine.profile import apply_event
from shared.engine.rules import triggered_rules
from shared.engine.stage_machine import move_stages
from shared.events import Event, format_time
from shared.http import ApiError
from shared.profile import Profile, StageState
from shared.templates import TemplateRenderer, TemplateRenderError, template_context


class TestEvent(BaseModel):
    """The event to test with; ``event`` (Segment) or ``name`` give a track its name."""

    type: Literal["track", "identify", "page", "screen", "group", "alias"] = "track"
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    messageId: str | None = None


class TestProfile(BaseModel):
    """The customer before the event; ``stages`` maps a journey to its current stage."""

    id: str = "test-customer"
    traits: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    revenue: float = 0.0
    stages: dict[str, str] = Field(default_factory=dict)


class RuleTestIn(BaseModel):
    event: TestEvent
    profile: TestProfile = Field(default_factory=TestProfile)
    now: datetime | None = Field(default=None, description="Defaults to the event's time")


class ConditionOut(BaseModel):
    field: str
    source: str
    result: Any = None
    error: str | None = None


class DecisionOut(BaseModel):
    outcome: str
    detail: str | None = None
    action_id: str | None = None


class ScheduledOut(BaseModel):
    key: str
    due: datetime


class ActionOut(BaseModel):
    action_id: str
    channel: str
    rendered: dict[str, Any] = Field(description="Every template of the action, rendered")
    error: str | None = Field(default=None, description="Why a template would fail")


class RuleTestOut(BaseModel):
    rule: str
    version: int
    triggered: bool = Field(description="The event (or a stage it enters) triggers the rule")
    conditions: list[ConditionOut]
    decisions: list[DecisionOut]
    stages_entered: list[str]
    scheduled: list[ScheduledOut]
    action: ActionOut | None


def run_test(rule: Rule, version: int, snapshot: ConfigSnapshot, body: RuleTestIn) -> RuleTestOut:
    """Evaluate ``rule`` as the orchestrator would, against the current journeys."""
    rule = rule.model_copy(update={"enabled": True})
    others = [r for r in snapshot.bundle.rules if r.key != rule.key]
    bundle = Bundle.model_construct(journeys=snapshot.bundle.journeys, rules=[*others, rule])
    versions = snapshot.rule_versions | {rule.key: version}
    config = CompiledConfig.compile(
        ConfigSnapshot(version=snapshot.version, bundle=bundle, rule_versions=versions)
    )
    # Only this rule decides; the others are compiled so references resolve the same way.
    config = _only(config, rule.key)
    event = _event(body)
    now = body.now or datetime.fromisoformat(event.timestamp)
    profile = _profile(body.profile)
    before = {w.key for w in profile.waits}
    conditions = _conditions(config, rule.key, event, profile, now)
    outcome = process_event(profile, event, config, now, partition=0, offset=0, dedupe_window=20)
    fired = [a for a in outcome.effects.actions if a.rule == rule.key]
    return RuleTestOut(
        rule=rule.key,
        version=version,
        triggered=any(
            r.key == rule.key for r in triggered_rules(event, outcome.transitions, config)
        ),
        conditions=conditions,
        decisions=[
            DecisionOut(outcome=d.outcome, detail=d.detail, action_id=d.action_id)
            for d in outcome.effects.rule_outcomes
            if d.rule == rule.key
        ],
        stages_entered=[f"{t.journey}.{t.to_stage}" for t in outcome.transitions],
        scheduled=[
            ScheduledOut(key=w.key, due=datetime.fromtimestamp(w.due, UTC))
            for w in outcome.profile.waits
            if w.rule == rule.key and w.key not in before
        ],
        action=_render(fired[0], config.rules[rule.key].action_spec) if fired else None,
    )


def _only(config: CompiledConfig, key: str) -> CompiledConfig:
    keep = {k: v for k, v in config.rules.items() if k == key}

    def narrow(index: dict[object, tuple[Any, ...]]) -> dict[object, tuple[Any, ...]]:
        return {k: tuple(r for r in v if r.key == key) for k, v in index.items()}

    return CompiledConfig(
        version=config.version,
        journeys=config.journeys,
        rules=keep,
        by_event=narrow(config.by_event),
        by_stage=narrow(config.by_stage),
        by_unless=narrow(config.by_unless),
        goal_events=config.goal_events,
        shape=config.shape,
    )


def _event(body: RuleTestIn) -> Event:
    given = body.event
    try:
        moment = format_time(given.timestamp or body.now or datetime.now(UTC))
    except OverflowError:  # a time near year 1 or 9999 in a zone that UTC cannot reach
        raise ApiError(422, "invalid", "event.timestamp is out of range") from None
    return Event(
        message_id=given.messageId or f"test-{uuid.uuid4()}",
        type=given.type,
        customer_id=body.profile.id,
        user_id=body.profile.id,
        timestamp=moment,
        received_at=moment,
        name=given.event or given.name,
        properties=given.properties,
        traits=given.traits,
        context=given.context,
    )


def _profile(given: TestProfile) -> Profile:
    return Profile(
        id=given.id,
        traits=dict(given.traits),
        counts=dict(given.counts),
        revenue=given.revenue,
        stages={j: StageState(s, format_time(datetime.now(UTC))) for j, s in given.stages.items()},
    )


def _conditions(
    config: CompiledConfig, key: str, event: Event, profile: Profile, now: datetime
) -> list[ConditionOut]:
    """The rule's ``if`` on the profile as it will be after the event is applied."""
    compiled = config.rules[key]
    if compiled.condition is None:
        return []
    # The same steps as the engine: the event applied and stages moved, then the rules.
    probe = Profile.from_json(profile.to_json())
    apply_event(probe, event, partition=0, offset=0, dedupe_window=20)
    view = event_view(event)
    move_stages(
        probe, config.journeys, Scope(view, probe, now, shape=config.shape), event.timestamp
    )
    scope = Scope(view, probe, now, shape=config.shape)
    source = compiled.definition.if_ or ""
    try:
        result = evaluate(compiled.condition, scope)
    except ExpressionFailed as exc:
        return [ConditionOut(field="if", source=source, error=str(exc))]
    return [ConditionOut(field="if", source=source, result=result)]


def _render(action: ActionRecord, rule_spec: dict[str, Any]) -> ActionOut:
    renderer = TemplateRenderer()
    context = template_context(action)
    spec = unseal(action.spec, rule_spec)
    rendered: dict[str, Any] = {}
    try:
        for name in CHANNEL_FIELDS[action.channel]:
            if name == "secret" or spec.get(name) is None:
                continue
            value = spec[name]
            if name == "html":
                rendered[name] = renderer.render(value, context, field=name, html=True)
            else:
                rendered[name] = renderer.render_tree(value, context, field=name)
    except TemplateRenderError as exc:
        return ActionOut(
            action_id=action.action_id, channel=action.channel, rendered=rendered, error=str(exc)
        )
    return ActionOut(action_id=action.action_id, channel=action.channel, rendered=rendered)
