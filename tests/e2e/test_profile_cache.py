"""The events loop's profile cache never wins over Redis: a profile changed by another
writer, or erased, is read again before the next event is applied to it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from services.api.customers.service import erase_redis
from shared.customer_keys import CustomerKeys
from shared.settings import Settings
from tests.e2e.test_wait_policies import engine
from tests.kafka_io import event

pytestmark = pytest.mark.timeout(60)


def cache(outcome: str) -> float:
    return REGISTRY.get_sample_value("safar_profile_cache_total", {"outcome": outcome}) or 0.0


async def test_a_profile_written_by_another_writer_is_not_overwritten_from_the_cache(
    settings: Settings,
) -> None:
    async with engine(settings, []) as safar:
        await safar.handle([event("c1", "Product Viewed")])
        # Another writer (a timer loop, say) changes the profile after the events loop did.
        profile = await safar.profile("c1")
        profile.traits["vip"] = True
        version = (await safar.store.load_many(["c1"]))["c1"].version
        assert await safar.store.save_many([(profile, version)]) == [True]

        hits, stale = cache("hit"), cache("stale")
        await safar.handle([event("c1", "Order Completed")])
        assert (cache("hit"), cache("stale")) == (hits, stale + 1), "the old copy was used"
        stored = await safar.profile("c1")
        assert stored.traits == {"vip": True}
        assert stored.counts == {"Product Viewed": 1, "Order Completed": 1}

        # The fresh profile is cached now: the next event builds on it without a reread.
        await safar.handle([event("c1", "Order Completed")])
        assert (cache("hit"), cache("stale")) == (hits + 1, stale + 1)
        assert (await safar.profile("c1")).counts["Order Completed"] == 2


async def test_an_erased_customer_is_not_brought_back_from_the_cache(settings: Settings) -> None:
    async with engine(settings, []) as safar:
        await safar.handle([event("c2", "Product Viewed"), event("c2", "Product Added")])
        await erase_redis(
            redis=safar.redis,
            keys=CustomerKeys(settings.namespace),
            customer_ids={"c2"},
            timer_shards=settings.timer_shards,
        )
        await safar.handle([event("c2", "Order Completed")])
        stored = await safar.profile("c2")
        assert stored.counts == {"Order Completed": 1}, "the erased history came back"


async def test_an_event_that_failed_halfway_leaves_nothing_in_the_cache(
    settings: Settings,
) -> None:
    async with engine(settings, []) as safar:
        await safar.handle([event("c3", "Product Viewed")])
        # Counted, then its timestamp fails to parse: the engine raises, the event goes to
        # safar.dlq, and the half-changed profile must not be the next event's start.
        broken = replace(event("c3", "Broken"), timestamp="not a time")
        await safar.handle([broken])
        await safar.handle([event("c3", "Order Completed")])
        assert (await safar.profile("c3")).counts == {"Product Viewed": 1, "Order Completed": 1}
