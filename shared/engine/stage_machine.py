"""Moves a customer through the stages of every active journey (DESIGN §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.engine.compiled import CompiledJourney
from shared.engine.expression_context import Scope, holds
from shared.profile import Profile, StageState

MoveKind = Literal["enter", "forward", "skip", "backward"]


@dataclass(frozen=True, slots=True)
class Transition:
    journey: str
    from_stage: str | None
    to_stage: str
    kind: MoveKind
    at: str


def target_stage(journey: CompiledJourney, scope: Scope, floor: int) -> int:
    """Index of the last stage whose ``when`` holds, looking only above ``floor``; -1 if none."""
    for index in range(len(journey.stages) - 1, floor, -1):
        if holds(journey.stages[index].condition, scope):
            return index
    return -1


def move_stages(
    profile: Profile, journeys: tuple[CompiledJourney, ...], scope: Scope, at: str
) -> list[Transition]:
    """Move the profile in place; return one transition per journey that moved."""
    transitions: list[Transition] = []
    for journey in journeys:
        state = profile.stages.get(journey.key)
        current = -1 if state is None else journey.positions.get(state.stage, -1)
        # Forward-only journeys never need the stages at or below the current one.
        floor = -1 if journey.allow_backward else current
        target = target_stage(journey, scope, floor)
        if target == -1 or target == current:
            continue
        kind: MoveKind
        if current == -1:
            kind = "enter"
        elif target < current:
            kind = "backward"
        else:
            kind = "forward" if target == current + 1 else "skip"
        to_stage = journey.stages[target].key
        transitions.append(
            Transition(journey.key, None if state is None else state.stage, to_stage, kind, at)
        )
        profile.stages[journey.key] = StageState(to_stage, at)
    return transitions
