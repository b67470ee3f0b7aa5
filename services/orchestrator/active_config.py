"""The configuration in force, swapped atomically when a new snapshot arrives."""

from __future__ import annotations

import asyncio

from services.orchestrator.metrics import CONFIG_VERSION
from shared.definitions import ConfigSnapshot
from shared.engine.compiled import CompiledConfig


class ActiveConfig:
    def __init__(self) -> None:
        self.current: CompiledConfig | None = None
        self.loaded = asyncio.Event()  # set once a configuration is in force

    def update(self, snapshot: ConfigSnapshot) -> None:
        """Compile first, then swap: a half-compiled version is never visible."""
        compiled = CompiledConfig.compile(snapshot)
        self.current = compiled
        self.loaded.set()
        CONFIG_VERSION.set(compiled.version)
