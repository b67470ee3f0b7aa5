"""An event that fails inside the engine is dead-lettered, and nothing of it stays: the
customer's other events of the batch are applied again from the stored profile."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from shared.settings import Settings
from shared.topics import Topics
from tests.e2e.test_wait_policies import engine, topic_values
from tests.kafka_io import event

pytestmark = pytest.mark.timeout(60)

THANKS = {
    "key": "thanks",
    "trigger": {"event": "Order Completed"},
    "action": {"channel": "log", "message": "thanks"},
}


async def test_an_event_failing_in_the_engine_leaves_no_half_of_itself(
    settings: Settings,
) -> None:
    async with engine(settings, [THANKS]) as safar:
        await safar.handle([event("c1", "Product Viewed")])
        # Counted, then its timestamp fails to parse: the engine raises halfway through.
        broken = replace(event("c1", "Broken"), timestamp="not a time")
        await safar.handle([event("c1", "Product Added"), broken, event("c1", "Order Completed")])

        profile = await safar.profile("c1")
        assert profile.counts == {"Product Viewed": 1, "Product Added": 1, "Order Completed": 1}
        letters = [
            orjson.loads(v) for v in await topic_values(settings, Topics(settings.namespace).dlq)
        ]
        assert [(x["kind"], "not a time" in x["error"]) for x in letters] == [("event", True)]
        # The order after the broken event still thanked the customer, once.
        actions = await topic_values(settings, Topics(settings.namespace).actions)
        assert len(actions) == 1
