"""The profiles this events loop stored last, kept in memory: a customer's next event then
skips sending and decoding the profile.

Only the owner of a customer's partition applies that customer's events, so the copy here
is usually current. Each batch still asks Redis for the version of every profile (in the
same round trip that reads the others): a copy whose version moved (a timer loop fired one
of the customer's waits, an identity merge or an erasure changed the profile) is replaced
by the stored profile before the event is applied. A change between that read and the
write is caught by the compare-and-set, as without the cache. The cache is emptied whenever
the consumer group moves partitions.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.orchestrator.profile_store import Stored
from shared.profile import Profile


class ProfileCache:
    """Least recently stored profiles beyond ``capacity`` are dropped; 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # Insertion order is recency order: take() pops, put() appends.
        self._entries: dict[str, Stored] = {}

    def take(self, customer_ids: Iterable[str]) -> dict[str, Stored]:
        """Remove and return the cached profiles of these customers (those it has). A taken
        profile is the caller's to change: it is cached again only by :meth:`put`."""
        entries = self._entries
        found: dict[str, Stored] = {}
        for customer_id in customer_ids:
            stored = entries.pop(customer_id, None)
            if stored is not None:
                found[customer_id] = stored
        return found

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
