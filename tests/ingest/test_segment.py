"""Normalization of Segment messages (DESIGN §5), with plain data: no broker, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ingest.segment import (
    MAX_EVENT_BYTES,
    InvalidMessage,
    event_time,
    normalize,
    type_label,
)

pytestmark = pytest.mark.timeout(10)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _single(message: dict[str, Any], kind: Any = "track") -> Any:
    return normalize(message, type_hint=kind, received_at=NOW)


def _item(message: dict[str, Any], batch: dict[str, Any] | None = None) -> Any:
    return normalize(message, type_hint=None, received_at=NOW, batch=batch or {"batch": []})


def test_track_keeps_ids_name_properties_and_message_id() -> None:
    event = _single(
        {
            "userId": "u1",
            "anonymousId": "a1",
            "event": "Order Completed",
            "properties": {"order_id": "o1", "revenue": 30},
            "messageId": "m-1",
        }
    )
    assert (event.type, event.user_id, event.anonymous_id) == ("track", "u1", "a1")
    assert event.customer_id == "u1"
    assert event.name == "Order Completed"
    assert event.properties == {"order_id": "o1", "revenue": 30}
    assert event.message_id == "m-1"
    assert event.received_at == "2026-03-01T12:00:00.000000+00:00"
    assert event.timestamp == event.received_at


def test_message_id_is_generated_when_absent_or_null() -> None:
    first = _single({"userId": "u", "event": "E", "messageId": None})
    second = _single({"userId": "u", "event": "E"})
    assert first.message_id and second.message_id and first.message_id != second.message_id


def test_anonymous_only_event_is_keyed_by_anonymous_id() -> None:
    event = _single({"anonymousId": "anon-7", "event": "Product Viewed"})
    assert event.customer_id == "anon-7" and event.user_id is None


def test_numeric_ids_are_spelled_as_strings() -> None:
    event = _single({"userId": 42, "event": "E"})
    assert event.user_id == "42" and event.customer_id == "42"


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"event": "E"}, "userId or anonymousId"),
        ({"userId": None, "anonymousId": None, "event": "E"}, "userId or anonymousId"),
        ({"userId": "  ", "event": "E"}, "userId or anonymousId"),
        ({"userId": ["u"], "event": "E"}, "userId must be a string"),
        ({"userId": True, "event": "E"}, "userId must be a string"),
        # Safar's Redis keys separate ids with control characters.
        ({"userId": "a\x1eb", "event": "E"}, "userId must not contain control characters"),
        ({"anonymousId": "a\x00", "event": "E"}, "anonymousId must not contain control"),
        # orjson writes about 254 levels; Safar stores an event up to 16 deeper (a wait trigger).
        ({"userId": "u", "event": "E", "properties": {"p": _nested(240)}}, "more than 238 levels"),
        ({"userId": "u"}, "event"),
        ({"userId": "u", "event": ""}, "event"),
        ({"userId": "u", "event": 7}, "event"),
        ({"userId": "u", "event": "E", "properties": [1]}, "properties must be an object"),
        ({"userId": "u", "event": "E", "context": "web"}, "context must be an object"),
        ({"userId": "u", "event": "E", "timestamp": 1700000000}, "timestamp"),
        ({"userId": "u", "event": "E", "timestamp": "yesterday"}, "timestamp"),
        (
            {"userId": "u", "event": "E", "sentAt": "soon", "timestamp": "2026-01-01T00:00:00Z"},
            "sentAt",
        ),
    ],
)
def test_invalid_track_messages_say_why(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        _single(message)


def test_group_needs_group_id_and_alias_needs_both_ids() -> None:
    with pytest.raises(InvalidMessage, match="groupId"):
        _single({"userId": "u"}, "group")
    assert _single({"userId": "u", "groupId": 9}, "group").group_id == "9"
    with pytest.raises(InvalidMessage, match="previousId"):
        _single({"userId": "u"}, "alias")
    with pytest.raises(InvalidMessage, match="previousId"):
        _single({"anonymousId": "a", "previousId": "p"}, "alias")
    alias = _single({"userId": "u", "previousId": "anon"}, "alias")
    assert (alias.previous_id, alias.user_id, alias.customer_id) == ("anon", "u", "u")


def test_traits_come_from_traits_else_context_traits() -> None:
    own = _single(
        {"userId": "u", "traits": {"plan": "pro"}, "context": {"traits": {"x": 1}}}, "identify"
    )
    assert own.traits == {"plan": "pro"}
    nested = _single({"userId": "u", "context": {"traits": {"email": "a@b.c"}}}, "identify")
    assert nested.traits == {"email": "a@b.c"}
    assert nested.context == {"traits": {"email": "a@b.c"}}


def test_page_and_screen_names_fall_back_to_properties() -> None:
    assert _single({"userId": "u", "name": "Home"}, "page").name == "Home"
    assert _single({"userId": "u", "properties": {"name": "Cart"}}, "screen").name == "Cart"
    assert (
        _single({"userId": "u", "name": None, "properties": {"name": "Cart"}}, "page").name
        == "Cart"
    )
    assert _single({"userId": "u"}, "page").name is None


def test_route_type_wins_over_the_body_and_batch_items_need_a_known_type() -> None:
    assert _single({"userId": "u", "type": "identify", "event": "E"}, "track").type == "track"
    for bad in ({"userId": "u"}, {"userId": "u", "type": "purchase"}, {"userId": "u", "type": {}}):
        with pytest.raises(InvalidMessage, match="type must be one of"):
            _item(bad)
    with pytest.raises(InvalidMessage, match="JSON object"):
        _item("track")  # type: ignore[arg-type]


def test_type_label_is_bounded() -> None:
    assert type_label({"type": "track"}) == "track"
    assert type_label({"type": "x" * 100}) == "unknown"
    assert type_label({"type": ["track"]}) == "unknown"
    assert type_label(None) == "unknown"


def test_batch_context_and_integrations_merge_under_the_items_own() -> None:
    batch = {
        "context": {"library": {"name": "sdk"}, "locale": "fa-IR"},
        "integrations": {"All": True},
        "sentAt": "2026-03-01T12:00:05Z",
    }
    event = _item(
        {
            "type": "track",
            "userId": "u",
            "event": "E",
            "context": {"locale": "en-GB"},
            "timestamp": "2026-03-01T12:00:00Z",
        },
        batch,
    )
    assert event.context == {"library": {"name": "sdk"}, "locale": "en-GB"}
    # The batch's sentAt took part in the skew correction: 5 s before arrival.
    assert event.timestamp == "2026-03-01T11:59:55.000000+00:00"
    bare = _item({"type": "track", "userId": "u", "event": "E"}, batch)
    assert bare.context == batch["context"]


def test_item_context_of_the_wrong_type_is_not_hidden_by_the_batch_context() -> None:
    with pytest.raises(InvalidMessage, match="context"):
        _item({"type": "track", "userId": "u", "event": "E", "context": 3}, {"context": {}})


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The sender's clock is an hour fast; the event happened 10 s before it was sent.
    skewed = NOW + timedelta(hours=1)
    message = {
        "timestamp": (skewed - timedelta(seconds=10)).isoformat(),
        "sentAt": skewed.isoformat(),
    }
    assert event_time(message, NOW) == NOW - timedelta(seconds=10)
    assert event_time(
        {"originalTimestamp": message["timestamp"], "sentAt": message["sentAt"]}, NOW
    ) == (NOW - timedelta(seconds=10))
    assert event_time({"timestamp": "2026-01-01T00:00:00Z"}, NOW) == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    assert event_time({}, NOW) == NOW


def test_naive_timestamps_are_utc_and_extreme_ones_are_refused_not_crashed() -> None:
    event = _single({"userId": "u", "event": "E", "timestamp": "2026-01-01T10:00:00"})
    assert event.timestamp == "2026-01-01T10:00:00.000000+00:00"
    with pytest.raises(InvalidMessage):
        _single(
            {
                "userId": "u",
                "event": "E",
                "timestamp": "9999-12-31T00:00:00Z",
                "sentAt": "0001-01-02T00:00:00Z",
            }
        )
    with pytest.raises(InvalidMessage, match="out of range"):
        _single({"userId": "u", "event": "E", "timestamp": "0001-01-01T00:00:00+05:00"})


def test_event_size_limit_counts_the_merged_event() -> None:
    padding = "x" * (MAX_EVENT_BYTES - 200)
    assert _single({"userId": "u", "event": "E", "properties": {"p": padding}}).properties["p"]
    with pytest.raises(InvalidMessage, match="limit") as big:
        _single({"userId": "u", "event": "E", "properties": {"p": padding + "x" * 300}})
    assert big.value.code == "event_too_large"
    # Small item, big batch-level context: the stored event would be over the limit.
    with pytest.raises(InvalidMessage, match="limit"):
        _item({"type": "track", "userId": "u", "event": "E"}, {"context": {"p": padding * 2}})
