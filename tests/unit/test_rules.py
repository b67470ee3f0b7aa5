"""Rules, waits, policies, goals and identity merge: the pure engine with plain data."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.definitions import QuietHours
from shared.engine.compiled import CompiledConfig
from shared.engine.identity import merge_profiles
from shared.engine.policies import in_holdout, quiet_until
from shared.engine.process import Outcome, process_event
from shared.engine.waits import fire_wait
from shared.events import Event, format_time
from shared.profile import Profile
from tests.unit.engine_data import T0, bundle_config, track, webhook

_offset = iter(range(1, 10**9))


def feed(
    config: CompiledConfig,
    events: list[Event],
    profile: Profile | None = None,
    now: datetime = T0,
) -> tuple[Profile, list[Outcome]]:
    outcomes = []
    for event in events:
        outcome = process_event(
            profile, event, config, now, partition=0, offset=next(_offset), dedupe_window=20
        )
        profile = outcome.profile
        outcomes.append(outcome)
    assert profile is not None
    return profile, outcomes


def kinds(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    return [(o.rule, o.outcome) for x in outcomes for o in x.effects.rule_outcomes]


THANK_YOU = {
    "key": "thank-you",
    "trigger": {"event": "Order Completed"},
    "action": {
        "channel": "email",
        "to": "{{ customer.traits.email }}",
        "subject": "Thanks!",
        "body": "Hi",
    },
}
ABANDONED = {
    "key": "abandoned-cart",
    "trigger": {"event": "Product Added"},
    "if": "double(event.properties.price) >= 20.0",
    "wait": {
        "for": "30m",
        "grace": "2m",
        "key": "event.properties.cart_id",
        "unless": {
            "event": "Order Completed",
            "match": "event.properties.cart_id == trigger.properties.cart_id",
        },
    },
    "action": webhook(),
}


def added(cart: str, minutes: int = 0, price: float = 25.0, **extra: Any) -> Event:
    return track("Product Added", minutes=minutes, cart_id=cart, price=price, **extra)


def bought(cart: str, minutes: int) -> Event:
    return track("Order Completed", minutes=minutes, cart_id=cart)


def test_an_immediate_rule_fires_with_a_deterministic_action_id() -> None:
    config = bundle_config(None, [THANK_YOU, ABANDONED])
    event = track("Order Completed", message_id="order-1")
    _, [outcome] = feed(config, [event])
    [action] = outcome.effects.actions
    assert action.rule == "thank-you" and action.channel == "email"
    assert action.spec["subject"] == "Thanks!"
    assert action.trigger is not None and action.trigger["message_id"] == "order-1"
    _, [again] = feed(config, [event])  # a fresh profile, the same event
    assert again.effects.actions[0].action_id == action.action_id
    # Only rules naming the event ran: the abandoned-cart rule left no outcome.
    assert kinds([outcome]) == [("thank-you", "triggered"), ("thank-you", "fired")]


def test_the_rule_version_changes_the_action_id() -> None:
    event = track("Order Completed", message_id="order-1")
    _, [v1] = feed(bundle_config(None, [THANK_YOU]), [event])
    snapshot_v2 = bundle_config(None, [THANK_YOU], version=2)
    object.__setattr__(snapshot_v2.rules["thank-you"], "version", 2)
    _, [v2] = feed(snapshot_v2, [event])
    assert v1.effects.actions[0].action_id != v2.effects.actions[0].action_id


def test_a_false_condition_does_nothing_and_a_failing_one_is_recorded() -> None:
    config = bundle_config(None, [ABANDONED])
    _, outcomes = feed(config, [added("c1", price=5.0)])
    assert kinds(outcomes) == []
    _, outcomes = feed(config, [track("Product Added", cart_id="c1")])  # no price at all
    [(rule, kind)] = kinds(outcomes)
    assert (rule, kind) == ("abandoned-cart", "error")
    assert "price" in (outcomes[0].effects.rule_outcomes[0].detail or "")


def test_division_by_zero_and_integer_overflow_are_recorded_errors_too() -> None:
    """CEL raises ArithmeticError for these; the event is applied, the rule records it."""
    rule = {**THANK_YOU, "if": "100 / int(event.properties.n) > 1"}
    config = bundle_config(None, [rule])
    for n in (0, 10**30):
        profile, outcomes = feed(config, [track("Order Completed", n=n)])
        assert kinds(outcomes) == [("thank-you", "error")]
        assert profile.counts == {"Order Completed": 1}


def test_entering_a_stage_triggers_its_rules() -> None:
    loyalty = {
        "key": "loyalty-offer",
        "trigger": {"stage_entered": {"journey": "purchase", "stage": "loyalty"}},
        "action": webhook(),
    }
    config = bundle_config(None, [loyalty])
    _, outcomes = feed(config, [track("Order Completed", minutes=i) for i in range(4)])
    fired = [len(o.effects.actions) for o in outcomes]
    assert fired == [0, 0, 1, 0]


def test_holdout_is_deterministic_and_sends_nothing() -> None:
    rule = THANK_YOU | {"holdout": 0.5, "goal": {"event": "Order Completed", "within": "14d"}}
    config = bundle_config(None, [rule])
    held = [c for c in (f"c{i}" for i in range(400)) if in_holdout(c, "thank-you", 0.5)]
    assert 150 < len(held) < 250
    profile, [outcome] = feed(config, [track("Order Completed", customer=held[0])])
    assert outcome.effects.actions == []
    assert kinds([outcome])[-1] == ("thank-you", "held_out")
    assert [g.group for g in profile.goals] == ["holdout"]


def test_frequency_limits_suppress() -> None:
    rule = THANK_YOU | {"limits": {"max": 1, "per": "24h"}}
    config = bundle_config(None, [rule])
    _, outcomes = feed(
        config,
        [track("Order Completed", minutes=0), track("Order Completed", minutes=1)],
    )
    assert [len(o.effects.actions) for o in outcomes] == [1, 0]
    assert kinds(outcomes)[-1] == ("thank-you", "suppressed")


def test_quiet_hours_defer_to_the_end_of_the_window_in_the_customers_timezone() -> None:
    rule = THANK_YOU | {"quiet_hours": {"start": "21:00", "end": "08:00"}}
    config = bundle_config(None, [rule])
    late = datetime(2026, 11, 1, 22, 30, tzinfo=UTC)
    profile, [outcome] = feed(config, [track("Order Completed")], now=late)
    assert outcome.effects.actions == []
    [wait] = profile.waits
    assert datetime.fromtimestamp(wait.due, UTC) == datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    assert fire_wait(profile, "thank-you", wait.key, config, late).actions == []
    fired = fire_wait(profile, "thank-you", wait.key, config, late + timedelta(hours=10))
    assert len(fired.actions) == 1 and profile.waits == []
    # In Tokyo 22:30 UTC is 07:30 local: still quiet, until 08:00 JST = 23:00 UTC.
    tokyo = Profile(id="t1", traits={"timezone": "Asia/Tokyo"})
    profile, _ = feed(config, [track("Order Completed", customer="t1")], tokyo, now=late)
    assert datetime.fromtimestamp(profile.waits[0].due, UTC).hour == 23


def test_a_keyed_wait_per_cart_without_stacking() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, _ = feed(config, [added("cart-1", 0), added("cart-1", 5), added("cart-2", 6)])
    assert sorted((w.key, w.deadline) for w in profile.waits) == [
        ("cart-1", (T0 + timedelta(minutes=30)).timestamp()),
        ("cart-2", (T0 + timedelta(minutes=36)).timestamp()),
    ]
    assert profile.waits[0].due == profile.waits[0].deadline + 120  # grace


def test_unless_cancels_only_the_matching_cart_and_only_before_the_deadline() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, outcomes = feed(config, [added("cart-1", 0), added("cart-2", 0), bought("cart-1", 29)])
    assert [w.key for w in profile.waits] == ["cart-2"]
    assert kinds(outcomes[-1:]) == [("abandoned-cart", "cancelled")]
    # Bought after the deadline (stamped at 31m, processed during grace): the nudge stands.
    profile, _ = feed(config, [bought("cart-2", 31)], profile)
    assert [w.key for w in profile.waits] == ["cart-2"]


def test_a_purchase_reaching_safar_after_the_wait_fell_due_leaves_it_to_fire() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, _ = feed(config, [added("cart-1", 0), added("cart-2", 0)])
    # Both stamped before the 30m deadline; one reaches Safar within the 2m grace, the other
    # after it: the timer loop may be firing that wait already, so it is not cancelled.
    in_grace = replace(bought("cart-1", 29), received_at=format_time(T0 + timedelta(minutes=31)))
    too_late = replace(bought("cart-2", 29), received_at=format_time(T0 + timedelta(minutes=33)))
    profile, outcomes = feed(config, [in_grace, too_late], profile, now=T0 + timedelta(minutes=33))
    assert [w.key for w in profile.waits] == ["cart-2"]
    assert kinds(outcomes) == [("abandoned-cart", "cancelled")]


def test_a_due_wait_fires_once_with_the_trigger_it_was_scheduled_with() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, _ = feed(config, [added("cart-1", 0)])
    early = fire_wait(profile, "abandoned-cart", "cart-1", config, T0 + timedelta(minutes=31))
    assert early.actions == [] and len(profile.waits) == 1  # grace not over yet
    due = T0 + timedelta(minutes=32)
    fired = fire_wait(profile, "abandoned-cart", "cart-1", config, due)
    [action] = fired.actions
    assert action.trigger is not None and action.trigger["properties"]["cart_id"] == "cart-1"
    assert profile.waits == []
    assert fire_wait(profile, "abandoned-cart", "cart-1", config, due).actions == []


def test_goals_attribute_a_later_event_to_the_action() -> None:
    rule = {
        "key": "loyalty",
        "trigger": {"event": "Referral Sent"},
        "goal": {"event": "Order Completed", "within": "14d"},
        "action": webhook(),
    }
    config = bundle_config(None, [rule])
    profile, outcomes = feed(
        config,
        [
            track("Referral Sent"),
            track("Order Completed", minutes=10),
            track("Order Completed", minutes=20),
        ],
    )
    action_id = outcomes[0].effects.actions[0].action_id
    conversions = [c for o in outcomes for c in o.effects.conversions]
    assert [(c.action_id, c.group) for c in conversions] == [(action_id, "treated")]
    assert profile.goals == []


def test_a_goal_event_stamped_before_its_action_does_not_convert_it() -> None:
    goal = {"event": "Order Completed", "within": "14d"}
    thanks = {"key": "loyalty", "trigger": {"event": "Referral Sent"}, "goal": goal}
    # A plain delay: the nudge goes 30 minutes after the cart, whatever happens meanwhile.
    nudge = {
        "key": "nudge",
        "trigger": {"event": "Product Added"},
        "wait": {"for": "30m"},
        "goal": goal,
    }
    config = bundle_config(None, [thanks | {"action": webhook()}, nudge | {"action": webhook()}])
    profile, outcomes = feed(config, [track("Referral Sent", minutes=10)])
    # An order placed before the referral, arriving late: not a conversion of its action.
    profile, outcomes = feed(config, [track("Order Completed", minutes=5)], profile)
    assert outcomes[0].effects.conversions == []
    assert len(profile.goals) == 1  # still open for a later order

    profile, _ = feed(config, [track("Product Added", minutes=20)], profile)
    fired = fire_wait(profile, "nudge", "", config, T0 + timedelta(minutes=51))
    assert len(fired.actions) == 1
    # An order stamped before the nudge went (at 20 + 30 minutes), arriving after it,
    # converts the referral's action only; the next one converts the nudge.
    profile, outcomes = feed(config, [track("Order Completed", minutes=45)], profile)
    assert [c.rule for c in outcomes[0].effects.conversions] == ["loyalty"]
    profile, outcomes = feed(config, [track("Order Completed", minutes=55)], profile)
    assert [c.rule for c in outcomes[0].effects.conversions] == ["nudge"]
    assert profile.goals == []


def test_goal_windows_expire() -> None:
    rule = {
        "key": "loyalty",
        "trigger": {"event": "Referral Sent"},
        "goal": {"event": "Order Completed", "within": "1h"},
        "action": webhook(),
    }
    config = bundle_config(None, [rule])
    _, outcomes = feed(config, [track("Referral Sent"), track("Order Completed", minutes=61)])
    assert outcomes[-1].effects.conversions == []


def test_merging_an_anonymous_profile_keeps_the_furthest_stage_and_sums_counts() -> None:
    config = bundle_config(None, [ABANDONED])
    added = track("Product Added", customer="anon-1", cart_id="cart-9", price=30.0)
    anonymous, _ = feed(config, [replace(added, user_id=None, anonymous_id="anon-1")])
    assert not anonymous.known
    anonymous.traits = {"plan": "free", "email": "old@example.com"}
    known, _ = feed(config, [track("Product Viewed", customer="u1", minutes=-10)])
    known.traits = {"email": "new@example.com"}
    assert merge_profiles(known, anonymous, config)
    assert known.counts == {"Product Viewed": 1, "Product Added": 1}
    assert known.stages["purchase"].stage == "decision"
    assert [w.key for w in known.waits] == ["cart-9"]
    assert known.traits == {"plan": "free", "email": "old@example.com"}  # anonymous is newer
    assert not merge_profiles(known, anonymous, config)  # exactly once
    assert known.counts["Product Added"] == 1


def test_a_profile_seen_with_its_own_user_id_is_never_merged_into_another() -> None:
    """``alias`` with a victim's userId as previousId, sent with a site's public write key,
    must not fold the victim's profile into the sender's."""
    config = bundle_config(None, [ABANDONED])
    victim, _ = feed(config, [track("Order Completed", customer="victim", revenue=99.0)])
    attacker, _ = feed(config, [track("Product Viewed", customer="attacker")])
    assert victim.known
    assert not merge_profiles(attacker, victim, config)
    assert attacker.revenue == 0 and attacker.merged == []


def test_the_context_carries_only_what_expressions_read() -> None:
    from shared.engine.expression_context import ContextShape

    shape = ContextShape.of(
        ['event.name == "x"', "double(event.properties.price) > 1.0", 'count("a") > 1']
    )
    assert shape.fields == {
        "event": frozenset({"name", "properties"}),
        "customer": frozenset(),
        "trigger": frozenset(),
    }
    assert shape.cut("event", {"name": "x", "context": {"ip": "1"}}) == {"name": "x"}
    assert ContextShape.of(["size(customer) > 0"]).fields["customer"] is None


def test_rules_reading_the_customer_see_the_stage_just_entered() -> None:
    rule = THANK_YOU | {"if": 'customer.stages.purchase.stage == "purchase"'}
    _, [outcome] = feed(bundle_config(None, [rule]), [track("Order Completed")])
    assert len(outcome.effects.actions) == 1


# --- found by a review against DESIGN §6-§8 --------------------------------------------------


def test_a_cart_abandoned_again_after_its_nudge_gets_a_new_action_id() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, _ = feed(config, [added("c9", price=30.0)])
    first = fire_wait(profile, "abandoned-cart", "c9", config, T0 + timedelta(minutes=40))
    days = timedelta(days=3)
    profile, _ = feed(
        config,
        [replace(added("c9", price=30.0), timestamp=format_time(T0 + days))],
        profile,
        T0 + days,
    )
    second = fire_wait(profile, "abandoned-cart", "c9", config, T0 + days + timedelta(minutes=40))
    [a], [b] = first.actions, second.actions
    assert a.action_id != b.action_id  # the dispatcher would skip b as already delivered


def test_an_actions_customer_is_the_profile_when_it_fired_not_after_the_batch() -> None:
    config = bundle_config(None, [THANK_YOU])
    _, outcomes = feed(config, [track("Order Completed"), track("Order Completed")])
    first = outcomes[0].effects.actions[0]
    assert first.customer["counts"] == {"Order Completed": 1}


def test_a_late_older_event_does_not_move_last_seen_of_its_name_backwards() -> None:
    config = bundle_config(None, [])
    profile, _ = feed(
        config, [track("Order Completed"), track("Order Completed", minutes=-20 * 1440)]
    )
    assert profile.last_at["Order Completed"] == int(T0.timestamp())


def test_goals_nobody_reaches_are_forgotten_a_day_after_their_window() -> None:
    rule = {
        "key": "browse",
        "trigger": {"event": "Product Viewed"},
        "goal": {"event": "Order Completed", "within": "1d"},
        "action": webhook(),
    }
    config = bundle_config(None, [rule])
    profile = None
    for day in range(10):
        now = T0 + timedelta(days=3 * day)
        profile, _ = feed(config, [track("Product Viewed", minutes=3 * day * 1440)], profile, now)
    assert profile is not None and len(profile.goals) == 1  # only the last one is open


def test_a_merged_anonymous_profile_keeps_recognising_its_events() -> None:
    config = bundle_config(None, [])
    event = replace(track("Order Completed", customer="a1"), user_id=None, anonymous_id="a1")
    anonymous, _ = feed(config, [event])
    known, _ = feed(config, [track("Product Viewed", customer="u1")])
    assert merge_profiles(known, anonymous, config)
    retried = replace(event, customer_id="u1", user_id="u1")  # the SDK's retry, now linked
    known, [outcome] = feed(config, [retried], known)
    assert not outcome.applied and known.counts["Order Completed"] == 1


def test_rules_of_the_event_and_of_the_stages_it_entered_run_in_one_priority_order() -> None:
    late = {"key": "late-event", "priority": 500, "trigger": {"event": "Order Completed"}}
    early = {
        "key": "early-stage",
        "priority": 1,
        "trigger": {"stage_entered": {"journey": "purchase", "stage": "purchase"}},
    }
    rules = [{**r, "action": webhook()} for r in (late, early)]
    _, [outcome] = feed(bundle_config(None, rules), [track("Order Completed")])
    assert [o.rule for o in outcome.effects.rule_outcomes if o.outcome == "fired"] == [
        "early-stage",
        "late-event",
    ]


def test_quiet_hours_ending_in_the_repeated_hour_of_a_clock_change_end_after_now() -> None:
    """New York, 2026-11-01: 01:00-02:00 happens twice. At 01:10 EST (the second pass) the
    window's end is 01:30 EST, not 01:30 EDT (an hour ago, which made the timer loop spin)."""
    quiet = QuietHours(start="21:00", end="01:30", timezone="America/New_York")

    def end_at(now: datetime) -> float | None:
        until = quiet_until(quiet, Profile(id="c1"), now)
        return None if until is None else until.timestamp()

    second_pass = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST
    assert end_at(second_pass) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC).timestamp()
    first_pass = datetime(2026, 11, 1, 5, 10, tzinfo=UTC)  # 01:10 EDT
    assert end_at(first_pass) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp()


def test_a_profile_a_newer_version_wrote_reads_without_the_fields_it_added() -> None:
    config = bundle_config(None, [ABANDONED])
    profile, _ = feed(config, [track("Product Added", cart_id="cart-1", price=30.0)])
    data = orjson.loads(profile.to_json())
    data["loyalty_tier"] = "gold"
    data["waits"][0]["channel_hint"] = "sms"
    next(iter(data["stages"].values()))["entered_by"] = "m1"
    read = Profile.from_json(orjson.dumps(data))
    assert read == profile
