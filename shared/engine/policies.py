"""What stands between a decision and a send: holdout, frequency limits, quiet hours."""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.definitions import Limits, QuietHours
from shared.profile import Profile

DEFAULT_TIMEZONE = "UTC"


def in_holdout(customer_id: str, rule_key: str, fraction: float) -> bool:
    """Deterministic: the same customer is always in (or out of) a rule's control group."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{rule_key}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def over_limit(profile: Profile, rule_key: str, limits: Limits | None, now_s: float) -> bool:
    """True when the rule already fired ``max`` times within ``per``; prunes old fires."""
    if limits is None:
        return False
    window_start = now_s - limits.per.total_seconds()
    recent = [t for t in profile.fires.get(rule_key, ()) if t > window_start]
    if recent:
        profile.fires[rule_key] = recent
    else:
        profile.fires.pop(rule_key, None)
    return len(recent) >= limits.max


def record_fire(profile: Profile, rule_key: str, limits: Limits | None, now_s: float) -> None:
    if limits is not None:
        profile.fires.setdefault(rule_key, []).append(now_s)


def _zone(name: object) -> ZoneInfo:
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(DEFAULT_TIMEZONE)


def quiet_until(quiet: QuietHours | None, profile: Profile, now: datetime) -> datetime | None:
    """The end of the quiet window if ``now`` falls in it (customer's timezone), else None."""
    if quiet is None:
        return None
    zone = _zone(quiet.timezone or profile.traits.get("timezone"))
    local = now.astimezone(zone)
    start = time.fromisoformat(quiet.start)
    end = time.fromisoformat(quiet.end)
    clock = local.time()
    crosses_midnight = start > end  # e.g. 21:00-08:00
    inside = (clock >= start or clock < end) if crosses_midnight else start <= clock < end
    if not inside:
        return None
    end_day = local.date()
    if crosses_midnight and clock >= start:
        end_day += timedelta(days=1)
    until = datetime.combine(end_day, end, tzinfo=zone)
    if until <= now:
        # The end falls in the hour a clock change repeats, and ``now`` in its second
        # pass: it is the later of the two (else the action is deferred to the past, again
        # and again).
        until = until.replace(fold=1)
    return until if until > now else None
