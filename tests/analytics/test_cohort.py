"""A scripted cohort through ingest -> orchestrator -> safar.history -> recorder, and the
exact funnel and paths it must produce (the default purchase journey)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
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


def cohort_batch() -> list[dict[str, Any]]:
    """Each customer starts a second after the previous one; their events in order."""
    batch: list[dict[str, Any]] = []
    index = 0
    for group, (size, steps) in GROUPS.items():
        for n in range(size):
            customer = f"{group}-{n:02d}"
            start = T0 + timedelta(seconds=index)
            for step, (name, offset) in enumerate(steps):
                batch.append(
                    {
                        "type": "track",
                        "userId": customer,
                        "event": name,
                        "messageId": f"{customer}-{step}",
                        "timestamp": format_time(start + offset),
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
