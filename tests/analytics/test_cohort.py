"""A scripted cohort through ingest -> orchestrator -> safar.history -> recorder, and the
exact funnel and paths it must produce (the default purchase journey); the same cohort
under three rules, and the exact stats of each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.events import format_time
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics
from tests.analytics.history_records import T0
from tests.analytics.kafka_history import read_topic_records
from tests.conftest import Credentials
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(150)

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
STAGES = ["awareness", "consideration", "decision", "purchase", "retention", "loyalty"]

# 100 customers: 60 view a product, 40 add to cart, 25 buy, 10 buy three times. C, E and G
# skip stages (C and G enter past awareness, E jumps from awareness to decision).
GROUPS: dict[str, tuple[int, list[tuple[str, timedelta]]]] = {
    "A": (30, [("Ad Clicked", 0 * MINUTE)]),
    "B": (20, [("Ad Clicked", 0 * MINUTE), ("Product Viewed", 10 * MINUTE)]),
    "C": (10, [("Product Viewed", 0 * MINUTE)]),
    "D": (
        10,
        [
            ("Ad Clicked", 0 * MINUTE),
            ("Product Viewed", 20 * MINUTE),
            ("Product Added", 50 * MINUTE),
        ],
    ),
    "E": (5, [("Ad Clicked", 0 * MINUTE), ("Product Added", 40 * MINUTE)]),
    "F": (
        10,
        [("Product Viewed", 0 * MINUTE), ("Product Added", 10 * MINUTE), ("Order Completed", DAY)],
    ),
    "G": (5, [("Product Added", 0 * MINUTE), ("Order Completed", DAY)]),
    "H": (
        10,
        [
            ("Ad Clicked", 0 * MINUTE),
            ("Product Viewed", 30 * MINUTE),
            ("Product Added", 60 * MINUTE),
            ("Order Completed", DAY),
            ("Order Completed", DAY + 120 * MINUTE),
            ("Order Completed", DAY + 300 * MINUTE),
        ],
    ),
}
TRANSITIONS = 220


Clock = Callable[[int, timedelta], datetime]


def historic(index: int, offset: timedelta) -> datetime:
    """Customer ``index`` starts ``index`` seconds after T0; ``offset`` is the step's own."""
    return T0 + timedelta(seconds=index) + offset


def cohort_batch(
    clock: Clock = historic, keep: Callable[[str], bool] = lambda name: True
) -> list[dict[str, Any]]:
    """Each customer's events (those whose name ``keep`` accepts) in order, stamped by
    ``clock``; a message id names the customer and the step, whichever events are kept."""
    batch: list[dict[str, Any]] = []
    index = 0
    for group, (size, steps) in GROUPS.items():
        for n in range(size):
            customer = f"{group}-{n:02d}"
            for step, (name, offset) in enumerate(steps):
                if not keep(name):
                    continue
                batch.append(
                    {
                        "type": "track",
                        "userId": customer,
                        "event": name,
                        "messageId": f"{customer}-{step}",
                        "timestamp": format_time(clock(index, offset)),
                    }
                )
            index += 1
    return batch


def _stage(stage: str, reached: int, now_in: int, **rest: Any) -> dict[str, Any]:
    return {"stage": stage, "reached": reached, "now_in": now_in} | rest


def _strip(funnel: dict[str, Any]) -> list[dict[str, Any]]:
    """The funnel's stages with floats made comparable."""
    rows = []
    for row in funnel["stages"]:
        rows.append({k: pytest.approx(v) if isinstance(v, float) else v for k, v in row.items()})
    return rows


EXPECTED_FUNNEL = [
    _stage("awareness", 100, 30, conversion=None, drop_off=None, drop_off_rate=None,
           timed=0, median_seconds=None, p90_seconds=None),
    # Forward arrivals: 20 after 10 min, 10 after 20 min, 10 after 30 min.
    _stage("consideration", 70, 30, conversion=0.7, drop_off=30, drop_off_rate=0.3,
           timed=40, median_seconds=900.0, p90_seconds=1800.0),
    # 10 after 10 min (F), 20 after 30 min (D, H), 5 skipping after 40 min (E).
    _stage("decision", 40, 15, conversion=40 / 70, drop_off=30, drop_off_rate=30 / 70,
           timed=35, median_seconds=1800.0, p90_seconds=2400.0),
    # A day after the cart: 10 x (1d - 1h), 10 x (1d - 10 min), 5 x 1d.
    _stage("purchase", 25, 15, conversion=0.625, drop_off=15, drop_off_rate=0.375,
           timed=25, median_seconds=85800.0, p90_seconds=86400.0),
    _stage("retention", 10, 0, conversion=0.4, drop_off=15, drop_off_rate=0.6,
           timed=10, median_seconds=7200.0, p90_seconds=7200.0),
    _stage("loyalty", 10, 10, conversion=1.0, drop_off=0, drop_off_rate=0.0,
           timed=10, median_seconds=10800.0, p90_seconds=10800.0),
]  # fmt: skip

EXPECTED_PATHS = [
    {"from_stage": None, "to_stage": "awareness", "move": "enter", "transitions": 75},
    {"from_stage": "awareness", "to_stage": "consideration", "move": "forward", "transitions": 40},
    {"from_stage": "consideration", "to_stage": "decision", "move": "forward", "transitions": 30},
    {"from_stage": "decision", "to_stage": "purchase", "move": "forward", "transitions": 25},
    {"from_stage": None, "to_stage": "consideration", "move": "enter", "transitions": 20},
    {"from_stage": "purchase", "to_stage": "retention", "move": "forward", "transitions": 10},
    {"from_stage": "retention", "to_stage": "loyalty", "move": "forward", "transitions": 10},
    {"from_stage": None, "to_stage": "decision", "move": "enter", "transitions": 5},
    {"from_stage": "awareness", "to_stage": "decision", "move": "skip", "transitions": 5},
]

EXPECTED_SEQUENCES = [
    (["awareness"], 30),
    (["awareness", "consideration"], 20),
    (["awareness", "consideration", "decision"], 10),
    (["awareness", "consideration", "decision", "purchase", "retention", "loyalty"], 10),
    (["consideration"], 10),
    (["consideration", "decision", "purchase"], 10),
    (["awareness", "decision"], 5),
    (["decision", "purchase"], 5),
]


async def test_a_scripted_cohort_gives_the_exact_funnel_and_paths_and_survives_a_replay(
    settings: Settings, credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    await service("orchestrator").start()
    ingest = await service("ingest").start()
    headers = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as client:

        async def paths(**params: str) -> dict[str, Any]:
            response = await client.get("/v1/journeys/purchase/paths", params=params)
            assert response.status_code == 200, response.text
            return dict(response.json())

        async def funnel(**params: str) -> dict[str, Any]:
            response = await client.get("/v1/journeys/purchase/funnel", params=params)
            assert response.status_code == 200, response.text
            return dict(response.json())

        batch = cohort_batch()
        sent = await client.post(
            f"{ingest.url}/v1/batch", json={"batch": batch}, auth=(credentials.write_key, "")
        )
        assert sent.status_code == 200, sent.text

        def recorded(found: dict[str, Any]) -> int:
            return sum(p["transitions"] for p in found["paths"])

        observed = await eventually(
            paths, lambda p: recorded(p) >= TRANSITIONS, timeout=60, what="cohort recorded"
        )
        assert recorded(observed) == TRANSITIONS
        assert [
            {k: p[k] for k in ("from_stage", "to_stage", "move", "transitions")}
            for p in observed["paths"]
        ] == EXPECTED_PATHS
        assert all(p["customers"] == p["transitions"] for p in observed["paths"])
        assert [(s["stages"], s["customers"]) for s in observed["sequences"]] == EXPECTED_SEQUENCES

        everything = await funnel()
        assert everything["customers"] == 100
        assert everything["since"] is None
        assert _strip(everything) == EXPECTED_FUNNEL

        # The first day only: nobody has bought yet; everyone who added to cart is in decision.
        split = format_time(T0 + DAY)
        first_day = await funnel(until=split)
        assert [(s["stage"], s["reached"], s["now_in"]) for s in first_day["stages"]] == [
            ("awareness", 100, 30),
            ("consideration", 70, 30),
            ("decision", 40, 40),
            ("purchase", 0, 0),
            ("retention", 0, 0),
            ("loyalty", 0, 0),
        ]
        assert first_day["stages"][3]["conversion"] == 0.0
        assert first_day["stages"][4]["conversion"] is None  # nobody to convert from
        assert first_day["stages"][3]["median_seconds"] is None
        # The second day: the 25 buyers, who reached every earlier stage; the time to their
        # purchase is measured from their cart, the day before the range.
        second_day = await funnel(since=split)
        assert second_day["customers"] == 25
        assert [(s["stage"], s["reached"], s["now_in"]) for s in second_day["stages"]] == [
            ("awareness", 25, 0),
            ("consideration", 25, 0),
            ("decision", 25, 0),
            ("purchase", 25, 15),
            ("retention", 10, 0),
            ("loyalty", 10, 10),
        ]
        assert second_day["stages"][3]["median_seconds"] == pytest.approx(85800.0)
        assert second_day["stages"][1]["median_seconds"] is None
        moved_on_day_two = await paths(since=split)
        assert recorded(moved_on_day_two) == 25 + 10 + 10

        # Replay: every transition reaches the recorder a second time; no row is added.
        history = await read_topic_records(
            settings, Topics(settings.namespace).history, TRANSITIONS
        )
        producer = make_producer(settings)
        await producer.start()
        try:
            await _produce(producer, Topics(settings.namespace).history, history)
        finally:
            await producer.stop()

        async def duplicates() -> float:
            text = (await client.get("/metrics")).text
            return metric_value(
                text, "safar_recorder_records_total", kind="transition", outcome="duplicate"
            )

        await eventually(duplicates, lambda n: n >= TRANSITIONS, timeout=30, what="replay read")
        assert recorded(await paths()) == TRANSITIONS
        assert _strip(await funnel()) == EXPECTED_FUNNEL
        metrics = (await client.get("/metrics")).text
        inserted = metric_value(
            metrics, "safar_recorder_records_total", kind="transition", outcome="inserted"
        )
        assert inserted == TRANSITIONS


async def _produce(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    for key, value in records:
        await producer.send(topic, value, key=key)
    await producer.flush()


ORDER = "Order Completed"
# An immediate rule: every order is thanked at once (45 orders).
THANK_YOU = {
    "key": "thank-you",
    "trigger": {"event": ORDER},
    "action": {"channel": "log", "message": "thank you"},
}
# A wait with `unless`: due 2 s + 15 s grace after the add. The 25 buyers' orders are stamped
# within the 2 s and cancel their nudge; D and E (15) never buy and are nudged. The grace
# gives a loaded machine 15 s to process the orders before any nudge could fire.
ABANDONED_CART = {
    "key": "abandoned-cart",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "2s", "grace": "15s", "unless": {"event": ORDER}},
    "action": {"channel": "log", "message": "your cart misses you"},
}
# A holdout with a goal: everyone entering decision (40) is offered, 30% held out by the
# deterministic hash of customer and rule (shared/engine/policies.py: in_holdout) - here
# D-08, E-01, E-02, E-04, F-02, F-06, G-01, H-01 and H-02, of whom the last five buy.
DECISION_OFFER = {
    "key": "decision-offer",
    "trigger": {"stage_entered": {"journey": "purchase", "stage": "decision"}},
    "holdout": 0.3,
    "goal": {"event": ORDER, "within": "1h"},
    "action": {"channel": "log", "message": "an offer"},
}
RULES = [THANK_YOU, ABANDONED_CART, DECISION_OFFER]

_NO_HOLDOUT = {"customers": 0, "conversions": 0, "conversion_rate": None}
_ZERO = {"scheduled": 0, "cancelled": 0, "suppressed": 0, "held_out": 0, "errors": 0}
_DELIVERED = {"failed": 0, "retrying": 0}
EXPECTED_STATS: dict[str, dict[str, Any]] = {
    "thank-you": _ZERO | _DELIVERED | {
        "rule": "thank-you", "triggered": 45, "fired": 45, "sent": 45,
        "treated": {"customers": 45, "conversions": 0, "conversion_rate": 0.0},
        "holdout": _NO_HOLDOUT, "uplift": None, "relative_uplift": None,
    },
    "abandoned-cart": _ZERO | _DELIVERED | {
        "rule": "abandoned-cart", "triggered": 40, "scheduled": 40, "cancelled": 25,
        "fired": 15, "sent": 15,
        "treated": {"customers": 15, "conversions": 0, "conversion_rate": 0.0},
        "holdout": _NO_HOLDOUT, "uplift": None, "relative_uplift": None,
    },
    # Treated: 31 offered, 20 of them buy (one conversion each, H's first order); holdout:
    # 9, 5 of whom buy.
    "decision-offer": _ZERO | _DELIVERED | {
        "rule": "decision-offer", "triggered": 40, "held_out": 9, "fired": 31, "sent": 31,
        "treated": {"customers": 31, "conversions": 20,
                    "conversion_rate": pytest.approx(20 / 31)},
        "holdout": {"customers": 9, "conversions": 5, "conversion_rate": pytest.approx(5 / 9)},
        "uplift": pytest.approx(20 / 31 - 5 / 9),
        "relative_uplift": pytest.approx((20 / 31 - 5 / 9) / (5 / 9)),
    },
}  # fmt: skip
_COUNTS = ("triggered", "scheduled", "cancelled", "suppressed", "held_out", "fired", "errors",
           "sent", "failed", "retrying")  # fmt: skip


def _counts(stats: dict[str, Any]) -> list[int]:
    """Every count of a rule's stats; each only grows as the history is recorded."""
    groups = [stats[g][k] for g in ("treated", "holdout") for k in ("customers", "conversions")]
    return [stats[k] for k in _COUNTS] + groups


async def test_the_cohort_under_rules_gives_the_exact_rule_stats(
    credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    headers = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as client:
        # The rules exist before the orchestrator starts (it is ready once it has the latest
        # configuration), so no event is processed without them.
        for rule in RULES:
            created = await client.post("/v1/rules", json=rule)
            assert created.status_code == 201, created.text
        await service("orchestrator").start()
        ingest = await service("ingest").start()

        async def stats() -> dict[str, dict[str, Any]]:
            found = {}
            for key in EXPECTED_STATS:
                response = await client.get(f"/v1/rules/{key}/stats")
                assert response.status_code == 200, response.text
                found[key] = {
                    k: v for k, v in response.json().items() if k not in ("since", "until")
                }
            return found

        async def send(batch: list[dict[str, Any]]) -> None:
            response = await client.post(
                f"{ingest.url}/v1/batch", json={"batch": batch}, auth=(credentials.write_key, "")
            )
            assert response.status_code == 200, response.text

        # Everything but the orders, now: 40 carts start their waits.
        t0 = datetime.now(UTC)
        await send(cohort_batch(lambda index, offset: t0, keep=lambda name: name != ORDER))
        scheduled = await eventually(
            stats,
            lambda s: s["abandoned-cart"]["scheduled"] >= 40,
            timeout=15,
            what="the carts' waits recorded",
        )
        assert scheduled["abandoned-cart"]["cancelled"] == 0
        assert scheduled["abandoned-cart"]["fired"] == 0
        # The orders, stamped a second after the carts (before their waits' deadline).
        ordered = t0 + timedelta(seconds=1)
        await asyncio.sleep(max(0.0, (ordered - datetime.now(UTC)).total_seconds()))
        await send(cohort_batch(lambda index, offset: ordered, keep=lambda name: name == ORDER))

        def complete(found: dict[str, dict[str, Any]]) -> bool:
            return all(
                actual >= wanted
                for key, expected in EXPECTED_STATS.items()
                for actual, wanted in zip(_counts(found[key]), _counts(expected), strict=True)
            )

        # The nudges fire 17 s after the carts; every count only grows, so once each has
        # reached its expected value any difference left is a real one.
        found = await eventually(stats, complete, timeout=60, what="every rule's history")
        assert found == EXPECTED_STATS

        # The journey moves are the cohort's, whatever the clock and the rules.
        async def paths() -> dict[str, Any]:
            response = await client.get("/v1/journeys/purchase/paths")
            assert response.status_code == 200, response.text
            return dict(response.json())

        observed = await eventually(
            paths,
            lambda p: sum(m["transitions"] for m in p["paths"]) >= TRANSITIONS,
            timeout=30,
            what="cohort recorded",
        )
        assert [
            {k: p[k] for k in ("from_stage", "to_stage", "move", "transitions")}
            for p in observed["paths"]
        ] == EXPECTED_PATHS
