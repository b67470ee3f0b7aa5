"""A configuration snapshot compiled once per version: CEL programs ready to run."""

from __future__ import annotations

from dataclasses import dataclass

import cel

from shared.definitions import ConfigSnapshot, Journey
from shared.expressions import compile_expression


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled CEL condition; the literal ``true`` skips evaluation entirely."""

    source: str
    program: cel.Program | None

    @classmethod
    def compile(cls, source: str, field: str) -> Condition:
        constant = source.strip() == "true"
        return cls(source, None if constant else compile_expression(source, field))


@dataclass(frozen=True, slots=True)
class CompiledStage:
    key: str
    condition: Condition


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    key: str
    allow_backward: bool
    stages: tuple[CompiledStage, ...]
    positions: dict[str, int]

    @classmethod
    def compile(cls, journey: Journey) -> CompiledJourney:
        stages = tuple(
            CompiledStage(s.key, Condition.compile(s.when, f"journeys.{journey.key}.stages.{i}"))
            for i, s in enumerate(journey.stages)
        )
        return cls(
            journey.key,
            journey.allow_backward,
            stages,
            {s.key: i for i, s in enumerate(stages)},
        )


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    version: int
    journeys: tuple[CompiledJourney, ...]

    @classmethod
    def compile(cls, snapshot: ConfigSnapshot) -> CompiledConfig:
        """Compile every expression of a snapshot; raises ExpressionError on a bad one."""
        journeys = tuple(CompiledJourney.compile(j) for j in snapshot.bundle.journeys if j.enabled)
        return cls(snapshot.version, journeys)
