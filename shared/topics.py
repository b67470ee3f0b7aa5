"""Kafka topic names (DESIGN §4), scoped by the settings' namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Safar's own topics, in any namespace: no action may write to them.
_SAFAR_TOPIC = re.compile(r"(?:.+\.)?safar\.(?:events|actions|history|config|dlq)")


def is_safar_topic(name: str) -> bool:
    return _SAFAR_TOPIC.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Topics:
    """The five Safar topics for one namespace."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def events(self) -> str:
        return self._name("safar.events")

    @property
    def actions(self) -> str:
        return self._name("safar.actions")

    @property
    def history(self) -> str:
        return self._name("safar.history")

    @property
    def config(self) -> str:
        return self._name("safar.config")

    @property
    def dlq(self) -> str:
        return self._name("safar.dlq")

    def group(self, role: str) -> str:
        """Consumer group id for a role (orchestrator, dispatcher, recorder)."""
        return self._name(f"safar-{role}")

    def partitions(self, *, events: int, actions: int, history: int) -> dict[str, int]:
        """Every topic with its partition count; config is a single partition."""
        return {
            self.events: events,
            self.actions: actions,
            self.history: history,
            self.config: 1,
            self.dlq: 1,
        }
