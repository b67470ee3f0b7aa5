"""Redis key layout of the dispatcher, under the namespace's ``safar`` prefix (the api reads
it too, to erase a customer's scheduled retries)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchKeys:
    namespace: str = ""

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:safar" if self.namespace else "safar"

    def outcome(self, action_id: str) -> str:
        """String: the recorded outcome (sent | failed) of one action, with a TTL."""
        return f"{self.prefix}:{{{action_id}}}:outcome"

    # The retry schedule is two keys in one hash slot, so scripts may touch both.
    @property
    def retry_due(self) -> str:
        """Sorted set: action id -> epoch milliseconds when its next attempt is due."""
        return f"{self.prefix}:{{retries}}:due"

    @property
    def retry_actions(self) -> str:
        """Hash: action id -> the ActionRecord of its next attempt."""
        return f"{self.prefix}:{{retries}}:actions"
