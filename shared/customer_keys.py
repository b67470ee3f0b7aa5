"""Redis key layout for customer state, shared by the orchestrator (writer) and the api.

Every key of one customer carries the hash tag ``{customer}`` so that Redis Cluster keeps
them in one slot and a Lua script may touch them together.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

_SEP_CUSTOMER = "\x1e"
_SEP_KEY = "\x1f"


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    namespace: str = ""

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:safar" if self.namespace else "safar"

    def profile(self, customer_id: str) -> str:
        """Hash with ``p`` (profile JSON) and ``v`` (write version for compare-and-set)."""
        return f"{self.prefix}:{{{customer_id}}}:profile"

    def unreadable_profile(self, customer_id: str) -> str:
        """Hash: a profile that did not read back, set aside for an operator to look at."""
        return f"{self.prefix}:{{{customer_id}}}:profile-unreadable"

    def of_customer(self, customer_id: str) -> list[str]:
        """Every key that belongs to one customer alone (what an erasure deletes)."""
        return [
            self.profile(customer_id),
            self.unreadable_profile(customer_id),
            self.identity(customer_id),
        ]

    def identity(self, anonymous_id: str) -> str:
        """String: the userId an anonymousId has been linked to."""
        return f"{self.prefix}:{{{anonymous_id}}}:identity"

    @property
    def events_progress(self) -> str:
        """Hash: partition of safar.events -> epoch time up to which its events are applied."""
        return f"{self.prefix}:events-progress"

    def timer_shard(self, customer_id: str, shards: int) -> str:
        """Sorted set of due times holding this customer's waits (``{n}`` spreads shards)."""
        return f"{self.prefix}:timers:{{{zlib.crc32(customer_id.encode()) % shards}}}"

    def timer_shards(self, shards: int) -> list[str]:
        return [f"{self.prefix}:timers:{{{n}}}" for n in range(shards)]

    @staticmethod
    def timer_member(customer_id: str, rule: str, key: str) -> str:
        return f"{customer_id}{_SEP_CUSTOMER}{rule}{_SEP_KEY}{key}"

    @staticmethod
    def timer_members_of(customer_id: str) -> str:
        """A ``MATCH`` pattern for every timer member of this customer."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", customer_id) + _SEP_CUSTOMER + "*"

    @staticmethod
    def parse_timer_member(member: str) -> tuple[str, str, str]:
        """(customer id, rule, wait key) of a timer member."""
        customer_id, _, rest = member.partition(_SEP_CUSTOMER)
        rule, _, key = rest.partition(_SEP_KEY)
        return customer_id, rule, key
