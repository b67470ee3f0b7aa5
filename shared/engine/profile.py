"""How one event changes a customer's profile (pure, no I/O)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from shared.events import Event
from shared.profile import Profile


def seen_tag(message_id: str) -> str:
    """A 12-character digest of a message id: the dedupe window stays small in Redis."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(digest).decode()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def already_applied(profile: Profile, tag: str, partition: int, offset: int) -> bool:
    """True when this Kafka record or this message id (its :func:`seen_tag`) has changed the
    profile before."""
    last = profile.offsets.get(str(partition))
    if last is not None and offset <= last:
        return True
    return tag in profile.seen


def apply_event(
    profile: Profile,
    event: Event,
    partition: int,
    offset: int,
    dedupe_window: int,
    tag: str | None = None,
) -> None:
    """Fold one event into the profile in place: traits, counts, times, revenue, dedupe.
    ``tag`` is the event's :func:`seen_tag` when the caller has it already."""
    if event.user_id is not None and event.user_id == profile.id:
        profile.known = True
    if event.traits and event.type != "group":  # a group's traits describe the group
        profile.traits.update(event.traits)
    if event.type == "track" and event.name:
        profile.counts[event.name] = profile.counts.get(event.name, 0) + 1
        at = int(parse_time(event.timestamp).timestamp())  # a late, older event: no change
        profile.last_at[event.name] = max(at, profile.last_at.get(event.name, at))
        amount = event.properties.get("revenue", event.properties.get("total"))
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            profile.revenue = round(profile.revenue + float(amount), 2)
    if profile.first_seen is None or event.timestamp < profile.first_seen:
        profile.first_seen = event.timestamp
    if profile.last_seen is None or event.timestamp > profile.last_seen:
        profile.last_seen = event.timestamp
    profile.seen.append(tag or seen_tag(event.message_id))
    del profile.seen[:-dedupe_window]
    profile.offsets[str(partition)] = offset
