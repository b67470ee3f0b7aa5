"""The profiles this events loop stored last, kept in memory: a customer's next event then
skips the Redis read and the decoding.

Only the owner of a customer's partition applies that customer's events, so the copy here
is usually current. When it is not (a timer loop fired one of the customer's waits, an
identity merge or an erasure changed the profile), the compare-and-set of the next write
finds another version and the customer is reprocessed from Redis, as after any lost race.
The cache is emptied whenever the consumer group moves partitions, so a customer whose
partition went away and came back is read from Redis again.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.orchestrator import metrics
from services.orchestrator.profile_store import Stored
from shared.profile import Profile


class ProfileCache:
    """Least recently stored profiles beyond ``capacity`` are dropped; 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # Insertion order is recency order: take() pops, put() appends.
        self._entries: dict[str, Stored] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_ids: Iterable[str]) -> tuple[dict[str, Stored], list[str]]:
        """Remove and return the cached profiles of these customers, and the ids not cached.
        A taken profile is the caller's to change: it is cached again only by :meth:`put`."""
        found: dict[str, Stored] = {}
        missing: list[str] = []
        entries = self._entries
        for customer_id in customer_ids:
            stored = entries.pop(customer_id, None)
            if stored is None:
                missing.append(customer_id)
            else:
                found[customer_id] = stored
        metrics.PROFILE_CACHE.labels(outcome="hit").inc(len(found))
        metrics.PROFILE_CACHE.labels(outcome="miss").inc(len(missing))
        return found, missing

    def put(self, profile: Profile, version: int) -> None:
        """Keep a profile as stored in Redis at ``version`` (never one not yet written)."""
        if self._capacity <= 0 or version <= 0:
            return
        entries = self._entries
        entries.pop(profile.id, None)
        entries[profile.id] = Stored(profile, version)
        if len(entries) > self._capacity:
            del entries[next(iter(entries))]

    def discard(self, customer_ids: Iterable[str]) -> None:
        for customer_id in customer_ids:
            self._entries.pop(customer_id, None)

    def clear(self) -> None:
        self._entries.clear()
