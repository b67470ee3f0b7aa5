"""Field-by-field differences between two definitions, for ``?dry_run=true``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldChange:
    """``path`` as written in a definition (``wait.for``, ``stages[2].when``); ``None``
    on one side means the field is absent there."""

    path: str
    before: Any
    after: Any


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs; lists are compared position by position."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[FieldChange] = []
        for name in [*before, *(k for k in after if k not in before)]:
            changes += field_changes(before.get(name), after.get(name), _join(path, name))
        return changes
    if isinstance(before, list) and isinstance(after, list) and before and after:
        changes = []
        for index in range(max(len(before), len(after))):
            changes += field_changes(
                before[index] if index < len(before) else None,
                after[index] if index < len(after) else None,
                f"{path}[{index}]",
            )
        return changes
    return [] if before == after else [FieldChange(path, before, after)]
