"""Checks beyond shape: every expression compiles. Shared so invalid definitions are
refused by the api and could never be compiled differently by the orchestrator."""

from __future__ import annotations

from shared.definitions import Journey
from shared.expressions import compile_expression


def check_journey(journey: Journey, where: str = "") -> None:
    """Raise ExpressionError for the first stage condition that does not compile."""
    for index, stage in enumerate(journey.stages):
        compile_expression(stage.when, f"{where}stages[{index}].when")
