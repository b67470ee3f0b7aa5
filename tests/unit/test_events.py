"""Records on safar.events are checked field by field: one of the wrong shape is refused
(and dead-lettered by its consumers), never left to fail them further on."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.events import Event, EventDecodeError

GOOD: dict[str, Any] = {
    "schema": 1,
    "message_id": "m1",
    "type": "identify",
    "customer_id": "u1",
    "timestamp": "2026-01-01T00:00:00.000000+00:00",
    "received_at": "2026-01-01T00:00:00.000000+00:00",
    "user_id": "u1",
    "anonymous_id": "a1",
    "traits": {"plan": "gold"},
}


def test_a_normalized_event_round_trips() -> None:
    event = Event.from_json(orjson.dumps(GOOD))
    assert (event.customer_id, event.anonymous_id, event.traits) == ("u1", "a1", {"plan": "gold"})
    assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"customer_id": ["x"]}, "customer_id is not a string"),
        ({"customer_id": {"a": 1}}, "customer_id is not a string"),
        ({"message_id": None}, "message_id is not a string"),
        ({"message_id": 5}, "message_id is not a string"),
        ({"anonymous_id": ["a"]}, "anonymous_id is not a string"),
        ({"received_at": 1700000000}, "received_at is not a string"),
        ({"traits": ["gold"]}, "traits is not an object"),
        ({"properties": None}, "properties is not an object"),
        ({"type": "purchase"}, "unknown type"),
        ({"customer_id": ""}, "customer_id is empty"),
        ({"customer_id": "a\x1eb"}, "control character"),
        ({"unknown": 1}, "unexpected keyword"),
    ],
)
def test_a_field_of_the_wrong_shape_is_a_decode_error(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(EventDecodeError, match=reason):
        Event.from_json(orjson.dumps({**GOOD, **change}))
