"""The configuration in force, swapped atomically when a new snapshot arrives."""

from __future__ import annotations

from services.orchestrator.metrics import CONFIG_VERSION
from shared.definitions import ConfigSnapshot
from shared.engine.compiled import CompiledConfig


class ActiveConfig:
    def __init__(self) -> None:
        self.current: CompiledConfig | None = None

    def update(self, snapshot: ConfigSnapshot) -> None:
        """Compile first, then swap: a half-compiled version is never visible."""
        compiled = CompiledConfig.compile(snapshot)
        self.current = compiled
        CONFIG_VERSION.set(compiled.version)
