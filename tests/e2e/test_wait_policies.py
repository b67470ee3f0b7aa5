"""Wait leases and send policies with real Redis around the engine (DESIGN §6, §8).

The policies run through the orchestrator's own pieces: EventConsumer.handle stores the
profile and indexes its timers in Redis, and the timer loop fires what it claims from the
index. The policy tests call ``TimerLoop.tick`` with an explicit ``now``: the loop's own path,
a given clock.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from redis.asyncio import Redis

from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.event_consumer import EventConsumer
from services.orchestrator.events_progress import EventsProgress
from services.orchestrator.profile_store import ProfileStore
from services.orchestrator.timer_loop import TimerLoop
from services.orchestrator.wait_index import TimerEntry, WaitIndex
from shared.customer_keys import CustomerKeys
from shared.definitions import Bundle, ConfigSnapshot
from shared.embedded import free_port
from shared.engine.compiled import CompiledConfig
from shared.engine.policies import in_holdout
from shared.events import Event
from shared.kafka import make_consumer, make_producer, stop_consumer
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics
from tests.kafka_io import TopicReader, actions, event, publish_config
from tests.stack import ServiceProcess, eventually

pytestmark = pytest.mark.timeout(180)

JOURNEY = {"key": "purchase", "stages": [{"key": "awareness", "when": "true"}]}
T0 = datetime(2026, 11, 2, 11, 45, tzinfo=UTC)  # a fixed day: the clock is the test's


def log_action(text: str) -> dict[str, Any]:
    return {"channel": "log", "message": text}


def compile_rules(rules: list[dict[str, Any]]) -> CompiledConfig:
    bundle = Bundle.model_validate({"journeys": [JOURNEY], "rules": rules})
    return CompiledConfig.compile(ConfigSnapshot(version=1, bundle=bundle))


def at(moment: datetime) -> float:
    return moment.timestamp()


@dataclass
class Engine:
    """The events loop's and the timer loop's storage path, on real Redis and Kafka."""

    settings: Settings
    redis: Redis
    store: ProfileStore
    waits: WaitIndex
    worker: EventConsumer
    timers: TimerLoop
    config: CompiledConfig
    offsets: itertools.count[int]

    async def handle(self, events: Sequence[Event]) -> None:
        """One batch of the events loop (partition 0, increasing offsets)."""
        topic = Topics(self.settings.namespace).events
        records = []
        for e in events:
            value, key = e.to_json(), e.customer_id.encode()
            records.append(
                ConsumerRecord(
                    topic, 0, next(self.offsets), 0, 0, key, value, None, len(key), len(value), []
                )
            )
        await self.worker.handle({TopicPartition(topic, 0): records}, self.config)

    async def fire_due(self, now: datetime) -> list[TimerEntry]:
        """One tick of the timer loop at ``now``: what it claimed (and fired)."""
        return (await self.timers.tick(self.config, now)).entries

    async def profile(self, customer_id: str) -> Profile:
        stored = (await self.store.load_many([customer_id]))[customer_id]
        assert stored.profile is not None, f"no stored profile for {customer_id}"
        return stored.profile

    async def timer_due(self, customer_id: str, rule: str, key: str) -> float | None:
        entry = TimerEntry(customer_id, rule, key, 0.0)
        score = await self.redis.zscore(self.waits.shard(customer_id), entry.member)
        return None if score is None else float(score)


@asynccontextmanager
async def engine(settings: Settings, rules: list[dict[str, Any]]) -> AsyncIterator[Engine]:
    async with AsyncExitStack() as stack:
        redis = Redis.from_url(settings.require("redis_url"))
        stack.push_async_callback(redis.aclose)
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = make_consumer(settings, group_id=None)  # handle() never reads from it
        await consumer.start()
        stack.push_async_callback(stop_consumer, consumer)
        keys = CustomerKeys(settings.namespace)
        store = ProfileStore(redis, keys)
        waits = WaitIndex(redis, keys, settings.timer_shards)
        progress = EventsProgress(redis, keys)  # nothing marks it here: waits are never held
        config = compile_rules(rules)
        active = ActiveConfig()
        active.current = config
        yield Engine(
            settings,
            redis,
            store,
            waits,
            EventConsumer(settings, consumer, producer, store, waits, progress, active),
            TimerLoop(settings, producer, store, waits, progress, active),
            config,
            itertools.count(1),
        )


def with_traits(e: Event, **traits: Any) -> Event:
    return replace(e, traits=traits)


async def topic_values(settings: Settings, topic: str) -> list[bytes]:
    async with TopicReader(settings, topic) as reader:
        return list(await reader.to_end())


async def sent(settings: Settings) -> Counter[str]:
    """Actions on safar.actions, counted per customer."""
    values = await topic_values(settings, Topics(settings.namespace).actions)
    return Counter(a.customer_id for a in actions(values))


async def rule_records(settings: Settings, rule: str) -> list[dict[str, Any]]:
    values = await topic_values(settings, Topics(settings.namespace).history)
    records = [orjson.loads(v) for v in values]
    return [r for r in records if r.get("kind") == "rule" and r.get("rule") == rule]


# --- a claimer that dies after claiming loses nothing --------------------------------------


async def test_a_claim_abandoned_by_a_dead_claimer_goes_to_another_after_its_lease(
    settings: Settings,
) -> None:
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        waits = WaitIndex(redis, CustomerKeys(settings.namespace), shards=4)
        t0 = time.time()
        entries = [TimerEntry(f"c{i}", "nudge", f"cart-{i}", t0 - 1) for i in range(40)]
        await waits.update(add=entries)
        lease = 2.0

        async def claim_all(claimer_lease: float) -> list[TimerEntry]:
            return (await waits.claim_due(time.time(), claimer_lease, 1000)).entries

        by_a = await claim_all(lease)  # claimer A takes everything, then "dies"
        claimed_at = time.time()
        assert {e.member for e in by_a} == {e.member for e in entries}
        assert await claim_all(lease) == [], "B must not get entries under A's lease"
        assert time.time() < claimed_at + lease, "the premise: B asked before the lease ended"
        await asyncio.sleep(max(0.0, claimed_at + lease + 0.05 - time.time()))  # lease expiry
        by_b = await claim_all(lease)
        assert Counter(e.member for e in by_b) == Counter(e.member for e in entries)
        assert await claim_all(lease) == [], "each entry goes to one claimer at a time"
        assert await waits.pending() == 40, "claiming moves entries, it never drops them"
    finally:
        await redis.aclose()


DELAY = {
    "key": "delay",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "10s", "key": "event.properties.cart_id"},
    "action": log_action("nudge {{ trigger.properties.cart_id }}"),
}


def _pairs(values: list[bytes]) -> list[tuple[str, str]]:
    return [(a.customer_id, (a.trigger or {})["properties"]["cart_id"]) for a in actions(values)]


async def _orphans(safar: Engine, killed: float) -> dict[tuple[str, str], float]:
    """Entries leased past the kill whose wait is still pending: (customer, cart) -> lease end."""
    leased: dict[tuple[str, str], float] = {}
    for shard in safar.waits.shard_keys():
        for member, score in await safar.redis.zrangebyscore(
            shard, killed, "+inf", withscores=True
        ):
            entry = TimerEntry.parse(member, float(score))
            leased[entry.customer_id, entry.key] = entry.due
    profiles = await safar.store.load_many(sorted({c for c, _ in leased}))
    return {
        (customer, cart): due
        for (customer, cart), due in leased.items()
        if (p := profiles[customer].profile) is not None and p.find_wait("delay", cart)
    }


async def _claimed_now(redis: Redis, waits: WaitIndex, lease: float) -> int:
    """Entries whose score was pushed forward by a claim (their own due times are past)."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in waits.shard_keys():
            pipe.zcount(shard, time.time() + lease * 0.6, "+inf")
        return sum(await pipe.execute())


async def test_a_timer_member_that_is_not_text_is_dropped_not_claimed_forever(
    settings: Settings,
) -> None:
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        waits = WaitIndex(redis, CustomerKeys(settings.namespace), shards=2)
        due = time.time() - 1
        good = TimerEntry("ada", "nudge", "cart-1", due)
        await waits.update(add=[good])
        await redis.zadd(waits.shard_keys()[0], {b"\xff\x1ebad\x1fk": due})
        claim = await waits.claim_due(time.time(), 30.0, 100)
        assert [e.member for e in claim.entries] == [good.member]
        assert await waits.pending() == 1, "the member that is not text is gone"
    finally:
        await redis.aclose()


async def test_a_timer_process_killed_after_claiming_loses_nothing(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    lease = 10.0
    quick = settings.model_copy(update={"timer_lease_s": lease, "timer_batch": 500})
    await publish_config(quick, {"journeys": [JOURNEY], "rules": [DELAY]})
    timers_a = await service("orchestrator", "--role", "timers", settings_=quick).start()
    carts = [(f"k{i % 800}", f"cart-{i}") for i in range(8000)]
    async with engine(quick, [DELAY]) as safar:
        # Due 10 s after the add: the running loop A starts claiming once they are all stored.
        stamp = time.time()
        await safar.handle([event(c, "Product Added", at=stamp, cart_id=k) for c, k in carts])
        assert time.time() < stamp + 10, "the premise: every wait is stored before it is due"
        await eventually(
            lambda: _claimed_now(safar.redis, safar.waits, lease),
            lambda n: n > 0,
            timeout=30,
            interval=0.002,
            what="a claim by timer loop A",
        )
        timers_a.kill()
        killed = time.time()
        # Claims A left behind: the entry is leased and the wait is still in the profile.
        orphans = await _orphans(safar, killed)
        assert orphans, "the premise: A died holding claims (the kill fell between batches)"
        lease_end = max(orphans.values())
        b_settings = quick.model_copy(update={"orchestrator_port": free_port()})
        await service("orchestrator", "--role", "timers", settings_=b_settings).start()

        async def fired() -> list[bytes]:
            return await topic_values(quick, Topics(quick.namespace).actions)

        def pairs(values: list[bytes]) -> set[tuple[str, str]]:
            return set(_pairs(values))

        if time.time() < lease_end - 1:
            # B is up before A's leases end: it fires everything else but not A's claims.
            others = set(carts) - set(orphans)
            values = await eventually(fired, lambda v: others <= pairs(v), timeout=60, interval=0.5)
            if time.time() < lease_end - 0.2:
                assert not pairs(values) & set(orphans) - _published_before_kill(values, killed)
        values = await eventually(
            fired, lambda v: pairs(v) == set(carts), timeout=60, interval=0.5, what="all fired"
        )
    ids = Counter(a.action_id for a in actions(values))
    assert len(ids) == len(carts)
    twice = {
        (a.customer_id, (a.trigger or {})["properties"]["cart_id"])
        for a in actions(values)
        if ids[a.action_id] > 1
    }
    # A repeat (same action id) can only be a claim A published but did not store.
    assert twice <= set(orphans), twice - set(orphans)
    for a in actions(values):
        key = (a.customer_id, (a.trigger or {})["properties"]["cart_id"])
        if key in orphans and datetime.fromisoformat(a.created_at).timestamp() > killed:
            assert datetime.fromisoformat(a.created_at).timestamp() >= orphans[key] - 1e-3, (
                f"{key} fired by B before A's lease ended"
            )


def _published_before_kill(values: list[bytes], killed: float) -> set[tuple[str, str]]:
    return {
        (a.customer_id, (a.trigger or {})["properties"]["cart_id"])
        for a in actions(values)
        if datetime.fromisoformat(a.created_at).timestamp() <= killed
    }


# --- quiet hours, limits, holdout: the engine's clock given, Redis and Kafka real ----------

QUIET_NUDGE = {
    "key": "nudge",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "30m", "key": "event.properties.cart_id"},
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "action": log_action("nudge {{ trigger.properties.cart_id }}"),
}


async def test_quiet_hours_in_the_customers_timezone_defer_the_wait_to_the_windows_end(
    settings: Settings,
) -> None:
    async with engine(settings, [QUIET_NUDGE]) as safar:
        # Due 12:15 UTC: 21:15 in Tokyo (quiet until 08:00 = 23:00 UTC), 12:15 in London.
        await safar.handle(
            [
                with_traits(
                    event("kim", "Product Added", at=at(T0), cart_id="k1"), timezone="Asia/Tokyo"
                ),
                with_traits(
                    event("lee", "Product Added", at=at(T0), cart_id="l1"),
                    timezone="Europe/London",
                ),
            ]
        )
        due = T0 + timedelta(minutes=30)
        quiet_end = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
        assert await safar.timer_due("kim", "nudge", "k1") == at(due)

        assert await safar.fire_due(due - timedelta(seconds=1)) == []
        claimed = await safar.fire_due(due)
        assert {e.customer_id for e in claimed} == {"kim", "lee"}
        assert await sent(settings) == {"lee": 1}
        assert await safar.timer_due("kim", "nudge", "k1") == at(quiet_end), "entry moved"
        assert (await safar.profile("kim")).waits[0].due == at(quiet_end)
        assert await safar.timer_due("lee", "nudge", "l1") is None

        assert await safar.fire_due(quiet_end - timedelta(seconds=1)) == []
        assert await sent(settings) == {"lee": 1}, "nothing is sent during the quiet window"

        assert [e.customer_id for e in await safar.fire_due(quiet_end)] == ["kim"]
        values = await topic_values(settings, Topics(settings.namespace).actions)
        kims = [a for a in actions(values) if a.customer_id == "kim"]
        assert [a.created_at for a in kims] == ["2026-11-02T23:00:00.000000+00:00"]
        assert (await safar.profile("kim")).waits == []
        assert await safar.waits.pending() == 0
    outcomes = [(r["customer_id"], r["outcome"]) for r in await rule_records(settings, "nudge")]
    assert Counter(outcomes) == {
        ("kim", "triggered"): 1,
        ("kim", "scheduled"): 2,  # scheduled, then deferred by quiet hours
        ("lee", "triggered"): 1,
        ("lee", "scheduled"): 1,
        ("lee", "fired"): 1,
        ("kim", "fired"): 1,
    }


THANKS = {
    "key": "thanks",
    "trigger": {"event": "Order Completed"},
    "limits": {"max": 1, "per": "24h"},
    "action": log_action("thanks"),
}


async def test_a_limit_suppresses_the_second_action_across_event_batches(
    settings: Settings,
) -> None:
    async with engine(settings, [THANKS]) as safar:
        await safar.handle([event("max", "Order Completed")])
        assert len((await safar.profile("max")).fires["thanks"]) == 1, "the count is stored"
        await safar.handle([event("max", "Order Completed"), event("neo", "Order Completed")])
        assert len((await safar.profile("max")).fires["thanks"]) == 1
    assert await sent(settings) == {"max": 1, "neo": 1}
    outcomes = [(r["customer_id"], r["outcome"]) for r in await rule_records(settings, "thanks")]
    assert outcomes.count(("max", "suppressed")) == 1
    assert outcomes.count(("max", "fired")) == 1


DELAYED_LIMITED = {
    "key": "follow-up",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "1h", "key": "event.properties.cart_id"},
    "limits": {"max": 1, "per": "24h"},
    "action": log_action("follow up {{ trigger.properties.cart_id }}"),
}


async def test_the_limit_window_follows_the_given_clock_on_the_timer_path(
    settings: Settings,
) -> None:
    async with engine(settings, [DELAYED_LIMITED]) as safar:
        hour = timedelta(hours=1)
        for i, offset in enumerate((0, 2, 26)):  # three batches: carts added at +0h, +2h, +26h
            await safar.handle(
                [event("ola", "Product Added", at=at(T0 + offset * hour), cart_id=f"c{i}")]
            )
        assert len(await safar.fire_due(T0 + 1 * hour)) == 1
        assert len(await safar.fire_due(T0 + 3 * hour)) == 1  # within 24 h of the first
        assert len(await safar.fire_due(T0 + 27 * hour)) == 1  # the window has passed
        assert (await safar.profile("ola")).fires["follow-up"] == [at(T0 + 27 * hour)]
        assert await safar.waits.pending() == 0
    values = await topic_values(settings, Topics(settings.namespace).actions)
    assert sorted((a.trigger or {})["properties"]["cart_id"] for a in actions(values)) == [
        "c0",
        "c2",
    ]
    outcomes = [(r["cause"], r["outcome"]) for r in await rule_records(settings, "follow-up")]
    # The cause names the wait's key and the event that started it.
    assert any(c.startswith("wait:c1:") and o == "suppressed" for c, o in outcomes)


OFFER = {
    "key": "offer",
    "trigger": {"event": "Order Completed"},
    "holdout": 0.5,
    "goal": {"event": "Referral Sent", "within": "14d"},
    "action": log_action("offer"),
}


def first_customer(held_out: bool) -> str:
    return next(c for i in range(1000) if in_holdout(c := f"h{i}", "offer", 0.5) is held_out)


async def test_holdout_records_held_out_for_the_control_group_and_sends_for_the_rest(
    settings: Settings,
) -> None:
    control, treated = first_customer(True), first_customer(False)
    async with engine(settings, [OFFER]) as safar:
        for _ in range(2):  # the same decision in every batch
            await safar.handle(
                [event(control, "Order Completed"), event(treated, "Order Completed")]
            )
        groups = {g.group for g in (await safar.profile(control)).goals}
        assert groups == {"holdout"}, "the control group's goal is tracked"
        assert {g.group for g in (await safar.profile(treated)).goals} == {"treated"}
    assert await sent(settings) == {treated: 2}
    outcomes = Counter(
        (r["customer_id"], r["outcome"]) for r in await rule_records(settings, "offer")
    )
    assert outcomes == {
        (control, "triggered"): 2,
        (control, "held_out"): 2,
        (treated, "triggered"): 2,
        (treated, "fired"): 2,
    }


# --- timers are indexed after their wait is stored ----------------------------------------


async def test_a_replayed_batch_indexes_the_timer_a_crash_left_out(settings: Settings) -> None:
    async with engine(settings, [QUIET_NUDGE]) as safar:
        added = event("max", "Product Added", at=at(T0), cart_id="m1")
        await safar.handle([added])
        due = at(T0 + timedelta(minutes=30))
        assert await safar.timer_due("max", "nudge", "m1") == due
        # A crash after the profile write, before its timer was indexed:
        await safar.redis.zrem(
            safar.waits.shard("max"), TimerEntry("max", "nudge", "m1", 0.0).member
        )
        assert await safar.timer_due("max", "nudge", "m1") is None
        # The batch comes again: nothing is applied twice, and the timer is back.
        await safar.handle([added])
        assert (await safar.profile("max")).counts == {"Product Added": 1}
        assert await safar.timer_due("max", "nudge", "m1") == due
        # A timer loop's claim (its lease is the score) is never reset by a replay.
        [claimed] = await safar.waits.claim(safar.waits.shard("max"), due, lease=60, limit=10)
        await safar.handle([added])
        assert await safar.timer_due("max", "nudge", "m1") == due + 60
        assert claimed.customer_id == "max"


# --- a profile that does not read is set aside, not failed on forever ----------------------


async def test_an_unreadable_profile_is_set_aside_and_the_customer_starts_afresh(
    settings: Settings,
) -> None:
    async with engine(settings, [QUIET_NUDGE]) as safar:
        keys = CustomerKeys(settings.namespace)
        corrupt = {"max": {"p": b"{", "v": b"3"}, "neo": {"p": b"[]", "v": b"x"}}
        for customer, fields in corrupt.items():
            await safar.redis.hset(keys.profile(customer), mapping=fields)
        # The timer loop meets one through a due entry, the events loop the other.
        due = at(T0)
        await safar.waits.update(add=[TimerEntry("max", "nudge", "m1", due)])
        assert await safar.fire_due(T0 + timedelta(minutes=1)) != []
        await safar.handle([event("neo", "Product Added", at=at(T0), cart_id="n1")])
        assert (await safar.profile("neo")).counts == {"Product Added": 1}
        for customer, fields in corrupt.items():
            aside = await safar.redis.hgetall(keys.profile(customer) + "-unreadable")
            assert aside == {k.encode(): v for k, v in fields.items()}


async def test_a_wait_that_fails_to_fire_is_left_claimed_and_the_others_fire(
    settings: Settings,
) -> None:
    async with engine(settings, [QUIET_NUDGE]) as safar:
        for customer in ("max", "neo"):
            await safar.handle([event(customer, "Product Added", at=at(T0), cart_id="c")])
        # neo's wait is damaged: its due time is text (no writer of Safar's does that).
        key = CustomerKeys(settings.namespace).profile("neo")
        stored = orjson.loads(await safar.redis.hget(key, "p") or b"{}")
        stored["waits"][0]["due"] = "soon"
        await safar.redis.hset(key, "p", orjson.dumps(stored))
        later = T0 + timedelta(hours=1)
        fired = await safar.fire_due(later)
        assert {e.customer_id for e in fired} == {"max", "neo"}
        assert (await safar.profile("max")).waits == []
        assert len((await safar.profile("neo")).waits) == 1
        # neo's entry stays claimed: it comes back once the lease runs out.
        lease_end = await safar.timer_due("neo", "nudge", "c")
        assert lease_end is not None and lease_end > at(later)
