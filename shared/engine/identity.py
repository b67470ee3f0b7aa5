"""Merging an anonymous profile into the known customer's, exactly once."""

from __future__ import annotations

from shared.engine.compiled import CompiledConfig
from shared.profile import Profile


def merge_profiles(target: Profile, source: Profile, config: CompiledConfig) -> bool:
    """Fold ``source`` (the anonymous profile) into ``target``; False if already merged.

    Counts and revenue add up, the newer traits win, each journey keeps the furthest stage,
    pending waits and open goals carry over, first/last seen span both.

    A source that events named as their userId is a known customer, never merged: with the
    public write key of a website, anyone could otherwise ``alias`` someone's profile into
    their own.
    """
    if source.id == target.id or source.id in target.merged or source.known:
        return False
    for name, count in source.counts.items():
        target.counts[name] = target.counts.get(name, 0) + count
    for name, at in source.last_at.items():
        target.last_at[name] = max(at, target.last_at.get(name, at))
    target.revenue = round(target.revenue + source.revenue, 2)
    source_newer = (source.last_seen or "") > (target.last_seen or "")
    target.traits = target.traits | source.traits if source_newer else source.traits | target.traits
    seen = [t for t in (target.first_seen, source.first_seen) if t]
    target.first_seen = min(seen) if seen else None
    last = [t for t in (target.last_seen, source.last_seen) if t]
    target.last_seen = max(last) if last else None
    positions = {j.key: j.positions for j in config.journeys}
    for journey, theirs in source.stages.items():
        ours = target.stages.get(journey)
        order = positions.get(journey, {})
        if ours is None or order.get(theirs.stage, -1) > order.get(ours.stage, -1):
            target.stages[journey] = theirs
    for wait in source.waits:
        if target.find_wait(wait.rule, wait.key) is None:
            target.waits.append(wait)
    for rule, fires in source.fires.items():
        target.fires[rule] = sorted(target.fires.get(rule, []) + fires)
    target.goals.extend(source.goals)
    # The anonymous id's events, retried under the user's id, are still recognised (the
    # window's length is the target's: it is cut at its next event).
    target.seen = [tag for tag in source.seen if tag not in target.seen] + target.seen
    target.merged.append(source.id)
    return True
