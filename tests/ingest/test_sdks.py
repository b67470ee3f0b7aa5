"""The real tracking SDKs, pointed at ingest: every message arrives once, normalized.

segment-analytics-python posts gzip when asked; rudder-sdk-python gzips by default and treats
anything but 200 as a failure. Both batch in a background thread, which is joined at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
import rudderstack.analytics
import segment.analytics

from tests.ingest.conftest import Tracking
from tests.ingest.events_topic import Record, by_message_id, events_on_topic

pytestmark = pytest.mark.timeout(60)

HISTORIC = datetime(2025, 6, 1, 10, 30, tzinfo=UTC)


class Sdk(Protocol):
    def identify(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def track(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def page(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def screen(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def group(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def alias(self, **kwargs: Any) -> tuple[bool, dict[str, Any]]: ...
    def shutdown(self) -> None: ...


def _send_everything(sdk: Sdk, prefix: str) -> list[dict[str, Any]]:
    """One of each call, as an app would make them; returns the messages as the SDK sent them."""
    calls = [
        sdk.identify(
            user_id=f"{prefix}-ada",
            anonymous_id=f"{prefix}-anon",
            traits={"email": "ada@example.com", "plan": "pro"},
        ),
        sdk.track(
            anonymous_id=f"{prefix}-anon",  # linked to ada by the identify above
            event="Product Added",
            properties={"cart_id": "c1", "price": 19.99, "tags": ["a", "b"]},
        ),
        sdk.track(
            user_id=f"{prefix}-ada",
            event="Order Completed",
            properties={"order_id": "o1", "revenue": 39.98, "products": [{"sku": "A1"}]},
            timestamp=HISTORIC,
        ),
        sdk.page(
            user_id=f"{prefix}-ada", category="Docs", name="Pricing", properties={"path": "/p"}
        ),
        sdk.screen(anonymous_id=f"{prefix}-other", name="Home", properties={"tab": 1}),
        sdk.group(user_id=f"{prefix}-ada", group_id="acme", traits={"employees": 12}),
        sdk.alias(previous_id=f"{prefix}-old", user_id=f"{prefix}-ada"),
        sdk.track(user_id=42, event="Numeric Id"),
    ]
    assert all(queued for queued, _ in calls)
    return [message for _, message in calls]


def _check_normalized(sent: list[dict[str, Any]], records: list[Record], before: datetime) -> None:
    after = datetime.now(UTC)
    arrived = by_message_id(records)  # fails on any duplicate
    assert set(arrived) == {m["messageId"] for m in sent} and len(records) == len(sent)
    links = {
        m["anonymousId"]: m["userId"] for m in sent if m.get("anonymousId") and m.get("userId")
    }
    for message in sent:
        record = arrived[message["messageId"]]
        event = record.event
        kind = message["type"]
        user_id = message.get("userId") or links.get(message.get("anonymousId"))
        assert event.type == kind
        assert (event.user_id, event.anonymous_id) == (user_id, message.get("anonymousId"))
        assert (
            record.key == event.customer_id.encode() == (user_id or message["anonymousId"]).encode()
        )
        name = {
            "track": message.get("event"),
            "page": message.get("name"),
            "screen": message.get("name"),
        }
        assert event.name == name.get(kind)
        assert event.properties == message.get("properties", {})
        traits = message.get("traits") or message.get("context", {}).get("traits") or {}
        assert event.traits == traits
        assert event.group_id == message.get("groupId")
        assert event.previous_id == message.get("previousId")
        assert event.context["library"]["name"] == "analytics-python"
        received = datetime.fromisoformat(event.received_at)
        assert before <= received <= after
        # The SDK's timestamp, corrected by sentAt for the sender's clock: the same instant
        # give or take the time in flight.
        sent_time = datetime.fromisoformat(message["timestamp"])
        assert abs(datetime.fromisoformat(event.timestamp) - sent_time) < timedelta(seconds=5)
    historic = next(m for m in sent if m.get("event") == "Order Completed")
    assert arrived[historic["messageId"]].event.timestamp.startswith("2025-06-01T10:30:0")


@contextmanager
def _joined(sdk: Sdk) -> Iterator[Sdk]:
    """The SDK's consumer thread is always ended, also when an assertion fails."""
    try:
        yield sdk
    finally:
        for consumer in getattr(sdk, "consumers", None) or []:
            consumer.pause()
            consumer.join(timeout=10)


async def _run(tracking: Tracking, make: Callable[[list[Exception]], Sdk], prefix: str) -> None:
    errors: list[Exception] = []
    before = datetime.now(UTC)
    with _joined(make(errors)) as sdk:
        sent = _send_everything(sdk, prefix)
        await asyncio.to_thread(sdk.shutdown)  # flush the queue, then end the thread
    assert errors == []
    _check_normalized(sent, await events_on_topic(tracking.settings), before)


async def test_segment_analytics_python_with_gzip(tracking: Tracking) -> None:
    def make(errors: list[Exception]) -> Sdk:
        return segment.analytics.Client(
            tracking.write_key,
            host=tracking.ingest.url,
            gzip=True,
            max_retries=1,
            upload_interval=0.05,
            on_error=lambda error, _batch: errors.append(error),
        )

    await _run(tracking, make, "seg")


async def test_segment_sync_mode_posts_each_message_and_sees_401_for_a_bad_key(
    tracking: Tracking,
) -> None:
    client = segment.analytics.Client(
        tracking.write_key, host=tracking.ingest.url, gzip=True, sync_mode=True
    )
    _, message = await asyncio.to_thread(client.track, user_id="sync", event="Signed Up")
    records = await events_on_topic(tracking.settings)
    assert [r.event.message_id for r in records] == [message["messageId"]]
    stranger = segment.analytics.Client("wk_unknown", host=tracking.ingest.url, sync_mode=True)
    with pytest.raises(segment.analytics.request.APIError) as refused:
        await asyncio.to_thread(stranger.track, user_id="sync", event="Signed Up")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


async def test_rudder_sdk_python_gzip_by_default(tracking: Tracking) -> None:
    def make(errors: list[Exception]) -> Sdk:
        return rudderstack.analytics.Client(
            tracking.write_key,
            host=tracking.ingest.url,
            max_retries=1,
            upload_interval=0.05,
            on_error=lambda error, _batch: errors.append(error),
        )

    await _run(tracking, make, "rud")
