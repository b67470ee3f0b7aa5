"""The effects publisher on the real broker: what Kafka acknowledged is not sent again."""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from services.orchestrator.effects_publisher import EffectsPublisher
from shared.actions import ActionRecord
from shared.engine.effects import Effects, RuleOutcome
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics
from tests.kafka_io import TopicReader, actions

AT = "2026-11-25T12:00:00.000Z"


def _nudge(action_id: str) -> ActionRecord:
    return ActionRecord(
        action_id=action_id,
        rule="nudge",
        rule_version=1,
        customer_id="kim",
        channel="log",
        spec={"channel": "log", "message": "your cart"},
        customer={"id": "kim"},
        trigger=None,
        created_at=AT,
    )


def _fired(action_id: str, cause: str) -> RuleOutcome:
    return RuleOutcome("nudge", 1, "fired", cause, action_id=action_id)


def _counted(outcome: str) -> float:
    labels = {"rule": "nudge", "outcome": outcome}
    return REGISTRY.get_sample_value("safar_rule_outcomes_total", labels) or 0.0


async def test_records_decided_again_are_not_sent_twice_by_one_publisher(
    settings: Settings,
) -> None:
    topics = Topics(settings.namespace)
    fired_before = _counted("fired")
    producer = make_producer(settings)
    await producer.start()
    try:
        publisher = EffectsPublisher(producer, topics)
        publisher.add("kim", AT, Effects([_fired("a-1", "cart-1")], [_nudge("a-1")]))
        await publisher.flush()
        # Decided again on a fresh profile after a lost compare-and-set: the same records,
        # and one that is new this time.
        publisher.add(
            "kim",
            AT,
            Effects(
                [_fired("a-1", "cart-1"), _fired("a-2", "cart-2")],
                [_nudge("a-1"), _nudge("a-2")],
            ),
        )
        await publisher.flush()
        # The next batch has its own publisher: a repeat there is recognised downstream by
        # its id (the dispatcher's delivery log, the recorder's unique key), not here.
        publisher = EffectsPublisher(producer, topics)
        publisher.add("kim", AT, Effects([_fired("a-1", "cart-1")], [_nudge("a-1")]))
        await publisher.flush()
    finally:
        await producer.stop()

    async with TopicReader(settings, topics.actions) as reader:
        assert [a.action_id for a in actions(await reader.to_end())] == ["a-1", "a-2", "a-1"]
    async with TopicReader(settings, topics.history) as reader:
        records = [orjson.loads(v) for v in await reader.to_end()]
    assert [(r["action_id"], r["outcome"]) for r in records] == [
        ("a-1", "fired"),
        ("a-2", "fired"),
        ("a-1", "fired"),
    ]
    assert _counted("fired") - fired_before == 3, "outcomes are counted once per record sent"
