"""A configuration snapshot compiled once per version: expressions ready to run, rules
indexed by what triggers them so an event evaluates only the rules that name it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.actions import seal
from shared.definitions import ConfigSnapshot, Journey, Rule
from shared.engine.expression_context import ContextShape, Expression


def _optional(source: str | None, field: str) -> Expression | None:
    return None if source is None else Expression.compile(source, field)


@dataclass(frozen=True, slots=True)
class CompiledStage:
    key: str
    condition: Expression


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    key: str
    allow_backward: bool
    stages: tuple[CompiledStage, ...]
    positions: dict[str, int]

    @classmethod
    def compile(cls, journey: Journey) -> CompiledJourney:
        stages = tuple(
            CompiledStage(s.key, Expression.compile(s.when, f"journeys.{journey.key}.stages.{i}"))
            for i, s in enumerate(journey.stages)
        )
        return cls(
            journey.key,
            journey.allow_backward,
            stages,
            {s.key: i for i, s in enumerate(stages)},
        )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    definition: Rule
    version: int
    condition: Expression | None
    wait_key: Expression | None
    unless_match: Expression | None
    goal_match: Expression | None
    action_spec: dict[str, Any]  # the action as JSON, dumped once per version (read-only)
    record_spec: dict[str, Any]  # the same without credentials, as action records carry it

    @property
    def key(self) -> str:
        return self.definition.key

    @property
    def expressions(self) -> list[Expression]:
        found = (self.condition, self.wait_key, self.unless_match, self.goal_match)
        return [e for e in found if e is not None]

    @classmethod
    def compile(cls, rule: Rule, version: int) -> CompiledRule:
        where = f"rules.{rule.key}"
        wait, goal = rule.wait, rule.goal
        spec = rule.action.model_dump(mode="json", by_alias=True, exclude_none=True)
        return cls(
            definition=rule,
            version=version,
            condition=_optional(rule.if_, f"{where}.if"),
            wait_key=_optional(wait.key if wait else None, f"{where}.wait.key"),
            unless_match=_optional(
                wait.unless.match if wait and wait.unless else None, f"{where}.wait.unless.match"
            ),
            goal_match=_optional(goal.match if goal else None, f"{where}.goal.match"),
            action_spec=spec,
            record_spec=seal(spec),
        )


def _index(pairs: Sequence[tuple[object, CompiledRule]]) -> dict[object, tuple[CompiledRule, ...]]:
    index: dict[object, list[CompiledRule]] = {}
    for key, rule in pairs:
        index.setdefault(key, []).append(rule)
    return {k: tuple(sorted(v, key=evaluation_order)) for k, v in index.items()}


def evaluation_order(rule: CompiledRule) -> tuple[int, str]:
    """Lower priority numbers first, then by key, so evaluation order is stable."""
    return (rule.definition.priority, rule.key)


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    version: int
    journeys: tuple[CompiledJourney, ...]
    rules: dict[str, CompiledRule]
    by_event: dict[object, tuple[CompiledRule, ...]]  # event name -> rules it triggers
    by_stage: dict[object, tuple[CompiledRule, ...]]  # (journey, stage) -> rules
    by_unless: dict[object, tuple[CompiledRule, ...]]  # event name -> rules it cancels
    goal_events: frozenset[str]
    shape: ContextShape

    @classmethod
    def compile(cls, snapshot: ConfigSnapshot) -> CompiledConfig:
        """Compile every expression of a snapshot; raises ExpressionError on a bad one."""
        journeys = tuple(CompiledJourney.compile(j) for j in snapshot.bundle.journeys if j.enabled)
        rules = {
            r.key: CompiledRule.compile(r, snapshot.rule_version(r.key))
            for r in snapshot.bundle.rules
            if r.enabled
        }
        on_event, on_stage, on_unless = [], [], []
        for rule in rules.values():
            trigger, wait = rule.definition.trigger, rule.definition.wait
            if trigger.event is not None:
                on_event.append((trigger.event, rule))
            elif trigger.stage_entered is not None:
                on_stage.append(
                    ((trigger.stage_entered.journey, trigger.stage_entered.stage), rule)
                )
            if wait is not None and wait.unless is not None:
                on_unless.append((wait.unless.event, rule))
        return cls(
            version=snapshot.version,
            journeys=journeys,
            rules=rules,
            by_event=_index(on_event),
            by_stage=_index(on_stage),
            by_unless=_index(on_unless),
            goal_events=frozenset(
                r.definition.goal.event for r in rules.values() if r.definition.goal
            ),
            shape=ContextShape.of(
                [s.condition.source for j in journeys for s in j.stages]
                + [e.source for r in rules.values() for e in r.expressions]
            ),
        )
