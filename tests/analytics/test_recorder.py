"""The recorder on the real Kafka and PostgreSQL, in process: batches, replays, poison."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.analytics.stage_counts import StageCounts, count_stages
from services.api.db.base import make_engine, make_sessions
from services.api.history.models import CUSTOMER_TABLES, ActionRow
from services.api.history.service import erase_history
from services.api.recorder.recorder import HistoryRecorder
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics
from tests.analytics import history_records as h
from tests.analytics.kafka_history import produce_history, read_topic, rewind_group
from tests.conftest import Credentials
from tests.stack import eventually

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def sessions(
    settings: Settings, credentials: Credentials
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.require("database_url"))
    try:
        yield make_sessions(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        return {
            model.__tablename__: int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in CUSTOMER_TABLES
        }


def _sample(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "safar_recorder_records_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


def _mixed_history() -> list[bytes]:
    return [
        h.event("ada", "Product Viewed", minutes=0),
        h.transition("ada", "consideration", move="enter", minutes=0),
        h.transition("ada", "decision", from_stage="consideration", minutes=5),
        h.transition("ada", "consideration", from_stage="decision", move="backward", minutes=9),
        h.rule("ada", "nudge", "triggered", minutes=5),
        h.rule("ada", "nudge", "fired", action_id="act_a", minutes=5),
        h.action("ada", "nudge", "act_a", "retrying", 1, status_code=503, minutes=5.1),
        h.action("ada", "nudge", "act_a", "sent", 2, status_code=200, minutes=5.2),
        h.conversion("ada", "nudge", "act_a", "treated", minutes=30),
        h.rule("bob", "nudge", "held_out", action_id="act_b", minutes=1),
    ]


async def test_a_batch_is_stored_once_and_a_replay_inserts_nothing(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    records = _mixed_history()
    # The same records twice in one batch, as a producer retry would send them.
    await produce_history(producer, settings, records + records[:4])
    expected = {
        "history_transitions": 3,
        "history_customer_stages": 1,
        "history_rule_outcomes": 3,
        "history_action_attempts": 2,
        "history_actions": 2,
        "history_conversions": 1,
        "history_events": 1,
    }
    async with HistoryRecorder(settings, sessions, producer):
        await eventually(lambda: _counts(sessions), lambda c: c == expected, what="rows")
    async with sessions() as session:
        ada = await session.get(ActionRow, "act_a")
        bob = await session.get(ActionRow, "act_b")
    assert ada is not None and bob is not None
    assert (ada.status, ada.attempts, ada.channel, ada.status_code) == ("sent", 2, "webhook", 200)
    assert ada.created_at == datetime.fromisoformat(h.at(5))
    assert (bob.status, bob.attempts, bob.channel) == ("held_out", 0, None)

    # An operator rewinds the recorder's group: everything is read again, nothing added.
    before = sum(_sample(kind, "duplicate") for kind in ("transition", "rule", "event"))
    group = Topics(settings.namespace).group("recorder")
    await rewind_group(settings, group)
    async with HistoryRecorder(settings, sessions, producer):

        async def duplicates() -> float:
            return sum(_sample(k, "duplicate") for k in ("transition", "rule", "event")) - before

        await eventually(duplicates, lambda n: n >= 3 + 3 + 1, what="replayed records")
    assert await _counts(sessions) == expected


async def test_status_of_an_action_never_moves_back_whatever_the_arrival_order(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    # Delivery outcomes first, the decision last, and an old attempt after the success.
    await produce_history(
        producer,
        settings,
        [
            h.action("cy", "nudge", "act_c", "sent", 2, minutes=3),
            h.action("cy", "nudge", "act_c", "retrying", 1, minutes=2),
            h.rule("cy", "nudge", "fired", action_id="act_c", minutes=1),
            h.action("cy", "nudge", "act_d", "retrying", 1, channel="email", minutes=1),
            h.action("cy", "nudge", "act_d", "retrying", 2, channel="email", minutes=2),
            h.action("cy", "nudge", "act_d", "failed", 3, channel="email", error="550", minutes=3),
        ],
    )
    async with HistoryRecorder(settings, sessions, producer, batch_size=2):
        await eventually(
            lambda: _counts(sessions),
            lambda c: c["history_action_attempts"] == 5 and c["history_rule_outcomes"] == 1,
            what="attempts stored",
        )
    async with sessions() as session:
        sent = await session.get(ActionRow, "act_c")
        failed = await session.get(ActionRow, "act_d")
    assert sent is not None and failed is not None
    assert (sent.status, sent.attempts, sent.channel) == ("sent", 2, "webhook")
    assert sent.created_at == datetime.fromisoformat(h.at(1))
    assert sent.updated_at == datetime.fromisoformat(h.at(3))
    assert (failed.status, failed.attempts, failed.error) == ("failed", 3, "550")


async def test_records_off_contract_go_to_the_dlq_and_the_rest_is_stored(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    nul = orjson.loads(h.transition("dee", "decision", minutes=2))
    nul["journey"] = "pur\x00chase"  # valid JSON, refused by PostgreSQL's text type
    topic = Topics(settings.namespace)
    await producer.send_and_wait(topic.history, b"{not json", key=b"dee")
    await producer.send_and_wait(topic.history, b'{"schema": 9, "kind": "rule"}', key=b"dee")
    await produce_history(
        producer,
        settings,
        [
            h.transition("dee", "awareness", move="enter", minutes=0),
            orjson.dumps(nul),
            h.transition("dee", "purchase", from_stage="awareness", move="skip", minutes=3),
        ],
    )
    async with HistoryRecorder(settings, sessions, producer):
        await eventually(
            lambda: _counts(sessions),
            lambda c: c["history_transitions"] == 2,
            what="the valid transitions",
        )
        letters = [orjson.loads(v) for v in await read_topic(settings, topic.dlq, 3)]
    assert sorted(letter["kind"] for letter in letters) == ["history"] * 3
    errors = " | ".join(letter["error"] for letter in letters)
    assert "not JSON" in errors
    assert "unsupported history schema 9" in errors
    assert "refused by PostgreSQL" in errors


async def test_history_produced_before_an_erasure_is_dropped_and_later_history_kept(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    # Records still in Kafka when the customer is erased (the recorder was behind).
    await produce_history(producer, settings, _mixed_history())
    async with sessions() as session, session.begin():
        await erase_history(session=session, customer_ids={"ada"}, at=datetime.now(UTC))
    await produce_history(producer, settings, [h.transition("ada", "awareness", move="enter")])
    async with HistoryRecorder(settings, sessions, producer):
        await eventually(
            lambda: _counts(sessions),
            lambda c: c["history_rule_outcomes"] == 1 and c["history_transitions"] == 1,
            what="bob's history and ada's new move",
        )
    async with sessions() as session:
        rows = (
            await session.execute(text("SELECT customer_id, to_stage FROM history_transitions"))
        ).all()
        erasures = await session.scalar(text("SELECT count(*) FROM history_erasures"))
    assert [tuple(r) for r in rows] == [("ada", "awareness")]
    assert erasures == 1


async def _stages(sessions: async_sessionmaker[AsyncSession]) -> dict[tuple[str, str], int]:
    async with sessions() as session:
        return await count_stages(session)


def _gauge(journey: str, stage: str) -> float | None:
    return REGISTRY.get_sample_value(
        "safar_customers_in_stage", {"journey": journey, "stage": stage}
    )


async def test_customers_in_stage_follow_each_latest_move_and_survive_any_restart(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    await produce_history(
        producer,
        settings,
        [
            # bob's moves reach the recorder in the wrong order; ada goes back.
            h.transition("bob", "decision", from_stage="consideration", minutes=5),
            h.transition("bob", "consideration", move="enter", minutes=0),
            h.transition("ada", "consideration", move="enter", minutes=0),
            h.transition("ada", "decision", from_stage="consideration", minutes=5),
            h.transition("ada", "consideration", from_stage="decision", move="backward", minutes=9),
            h.transition("cy", "awareness", move="enter", journey="signup", minutes=1),
        ],
    )
    expected = {("purchase", "decision"): 1, ("purchase", "consideration"): 1}
    expected[("signup", "awareness")] = 1
    async with HistoryRecorder(settings, sessions, producer):
        await eventually(lambda: _stages(sessions), lambda c: c == expected, what="stages")
        # An older move of bob's arriving in a later batch does not move him back.
        await produce_history(producer, settings, [h.transition("bob", "awareness", minutes=-5)])
        await eventually(
            lambda: _counts(sessions),
            lambda c: c["history_transitions"] == 7,
            what="the late move stored",
        )
    assert await _stages(sessions) == expected
    # The count comes from PostgreSQL: a fresh process (a restarted api) shows the same.
    counts = StageCounts(sessions)
    await counts.refresh()
    assert _gauge("purchase", "decision") == _gauge("signup", "awareness") == 1
    async with sessions() as session, session.begin():
        await erase_history(session=session, customer_ids={"cy"}, at=datetime.now(UTC))
    await counts.refresh()
    assert _gauge("signup", "awareness") is None  # nobody left there: the series goes
    assert _gauge("purchase", "consideration") == 1
