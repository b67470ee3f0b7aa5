"""The stage machine with plain data: no Kafka, no Redis (DESIGN §6)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shared.engine.compiled import CompiledConfig
from shared.engine.process import Outcome, process_event
from shared.engine.stage_machine import Transition
from shared.events import Event
from shared.profile import Profile
from tests.unit.engine_data import PURCHASE, T0, config, track

_offsets = itertools.count()


@dataclass
class Step:
    outcome: Outcome
    stages: dict[str, str]  # journey -> stage right after this event

    @property
    def transitions(self) -> list[Transition]:
        return self.outcome.transitions


def run(events: list[Event], compiled: CompiledConfig | None = None) -> list[Step]:
    """Feed events one by one, keeping the stages as they were after each."""
    compiled = compiled or config()
    profile: Profile | None = None
    steps = []
    for event in events:
        outcome = process_event(
            profile, event, compiled, T0, partition=0, offset=next(_offsets), dedupe_window=20
        )
        profile = outcome.profile
        steps.append(Step(outcome, {j: s.stage for j, s in profile.stages.items()}))
    return steps


def stage(step: Step, journey: str = "purchase") -> str:
    return step.stages[journey]


def test_normal_progression_through_six_stages() -> None:
    outcomes = run(
        [
            track("Page Opened"),
            track("Product Viewed"),
            track("Product Added"),
            track("Order Completed"),
            track("Order Completed"),
            track("Order Completed"),
        ]
    )
    assert [stage(o) for o in outcomes] == [
        "awareness",
        "consideration",
        "decision",
        "purchase",
        "retention",
        "loyalty",
    ]
    assert [t.kind for o in outcomes for t in o.transitions] == ["enter"] + ["forward"] * 5
    assert outcomes[1].transitions[0].from_stage == "awareness"


def test_stages_can_be_skipped() -> None:
    first, second = run([track("Product Viewed"), track("Order Completed")])
    assert first.transitions[0].to_stage == "consideration"
    assert first.transitions[0].kind == "enter"
    move = second.transitions[0]
    assert (move.from_stage, move.to_stage, move.kind) == ("consideration", "purchase", "skip")


def test_no_backward_move_by_default() -> None:
    outcomes = run([track("Order Completed"), track("Product Viewed")])
    assert stage(outcomes[1]) == "purchase"
    assert outcomes[1].transitions == []


def test_backward_move_when_allowed() -> None:
    journey = PURCHASE | {"allow_backward": True}
    outcomes = run([track("Checkout Started"), track("Product Viewed")], config(journey))
    move = outcomes[1].transitions[0]
    assert (move.from_stage, move.to_stage, move.kind) == ("decision", "consideration", "backward")


def test_a_second_journey_moves_at_the_same_time() -> None:
    onboarding = {
        "key": "onboarding",
        "stages": [
            {"key": "signed-up", "when": 'event.name == "Signed Up"'},
            {"key": "activated", "when": 'event.name == "Product Added"'},
        ],
    }
    outcomes = run([track("Signed Up"), track("Product Added")], config(PURCHASE, onboarding))
    assert outcomes[0].stages.keys() == {"purchase", "onboarding"}
    assert {t.journey: t.to_stage for t in outcomes[1].transitions} == {
        "purchase": "decision",
        "onboarding": "activated",
    }


def test_a_failing_condition_counts_as_false() -> None:
    journey = {
        "key": "vip",
        "stages": [
            {"key": "seen", "when": "true"},
            {"key": "big-spender", "when": "event.properties.total > 100"},
        ],
    }
    outcomes = run([track("Order Completed"), track("Order Completed", total=250)], config(journey))
    assert stage(outcomes[0], "vip") == "seen"  # properties.total missing: not an error
    assert stage(outcomes[1], "vip") == "big-spender"


def test_the_profile_counts_revenue_traits_and_times() -> None:
    outcomes = run(
        [
            track("Order Completed", minutes=0, revenue=40),
            track("Order Completed", minutes=5, total=12.5),
        ]
    )
    profile = outcomes[-1].outcome.profile
    assert profile.counts == {"Order Completed": 2}
    assert profile.revenue == 52.5
    assert profile.first_seen is not None and profile.last_seen is not None
    assert profile.first_seen < profile.last_seen
    assert profile.stages["purchase"].since == profile.last_seen


def test_a_replayed_or_duplicate_event_changes_nothing() -> None:
    compiled = config()
    event = track("Order Completed", revenue=10)
    first = process_event(None, event, compiled, T0, partition=3, offset=7, dedupe_window=20)
    again = process_event(
        first.profile, event, compiled, T0, partition=3, offset=7, dedupe_window=20
    )
    resent = process_event(
        first.profile, event, compiled, T0, partition=3, offset=9, dedupe_window=20
    )
    assert first.applied and not again.applied and not resent.applied
    assert first.profile.counts == {"Order Completed": 1}
    assert first.profile.revenue == 10


def test_group_traits_do_not_overwrite_the_customers_own() -> None:
    identify = track("x")
    identify.type, identify.name, identify.traits = "identify", None, {"name": "Ada"}
    group = track("x")
    group.type, group.name, group.traits = "group", None, {"name": "Acme Inc", "employees": 40}
    steps = run([identify, group])
    assert steps[-1].outcome.profile.traits == {"name": "Ada"}
