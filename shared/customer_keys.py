"""Redis key layout for customer state, shared by the orchestrator (writer) and the api.

Every key of one customer carries the hash tag ``{customer}`` so that Redis Cluster keeps
them in one slot and a Lua script may touch them together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    namespace: str = ""

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:safar" if self.namespace else "safar"

    def profile(self, customer_id: str) -> str:
        """Hash with ``p`` (profile JSON) and ``v`` (write version for compare-and-set)."""
        return f"{self.prefix}:{{{customer_id}}}:profile"

    def identity(self, anonymous_id: str) -> str:
        """String: the userId an anonymousId has been linked to."""
        return f"{self.prefix}:{{{anonymous_id}}}:identity"
