"""The history contract as the recorder reads it: pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import ConsumerRecord

from services.api.history.records import (
    ActionOutcomeRecord,
    EventRecord,
    RecordDecodeError,
    TransitionRecord,
    action_progress,
    archived_event,
    decode_record,
)
from services.api.recorder.recorder import _produced_at
from shared.events import Event
from shared.history import record_id
from tests.analytics import history_records as h


def test_each_kind_decodes_to_its_typed_record() -> None:
    move = decode_record(h.transition("ada", "decision", from_stage="awareness", move="skip"))
    assert isinstance(move, TransitionRecord)
    assert (move.from_stage, move.to_stage, move.move) == ("awareness", "decision", "skip")
    assert move.at.utcoffset() is not None
    attempt = decode_record(h.action("ada", "nudge", "act_1", "failed", 3, status_code=410))
    assert isinstance(attempt, ActionOutcomeRecord)
    assert (attempt.status, attempt.attempt, attempt.status_code) == ("failed", 3, 410)
    assert decode_record(h.rule("ada", "nudge", "held_out", action_id="act_2")).kind == "rule"
    assert decode_record(h.conversion("ada", "nudge", "act_1", "treated")).kind == "conversion"


def test_an_event_record_keeps_the_event_nested_or_spread() -> None:
    nested = decode_record(h.event("ada", "Order Completed", properties={"revenue": 5}))
    assert isinstance(nested, EventRecord)
    assert nested.event["properties"] == {"revenue": 5}
    spread = orjson.loads(h.event("bob", "Product Viewed"))
    body = spread.pop("event")
    spread |= {k: v for k, v in body.items() if k not in ("schema",)}
    decoded = decode_record(orjson.dumps(spread))
    assert isinstance(decoded, EventRecord)
    assert decoded.event["message_id"] == decoded.event_id
    assert decoded.event["user_id"] == "bob"


def test_an_event_of_the_events_topic_is_archived_as_the_record_it_would_have_been() -> None:
    event = Event(
        message_id="m-1",
        type="track",
        customer_id="ada",
        user_id="ada",
        timestamp="2026-01-02T03:04:05.000000+00:00",
        received_at="2026-01-02T03:04:06.000000+00:00",
        name="Order Completed",
        properties={"revenue": 5},
    )
    archived = archived_event(event.to_json())
    assert (archived.kind, archived.id, archived.customer_id) == (
        "event",
        record_id("event", "m-1"),
        "ada",
    )
    assert (archived.event_id, archived.name, archived.type) == ("m-1", "Order Completed", "track")
    assert archived.at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert archived.event["properties"] == {"revenue": 5}
    with pytest.raises(RecordDecodeError, match="not a normalized event"):
        archived_event(b"not json")
    with pytest.raises(RecordDecodeError, match="unsupported event schema"):
        archived_event(b'{"schema": 99}')
    with pytest.raises(RecordDecodeError, match="customer_id"):
        archived_event(orjson.dumps(orjson.loads(event.to_json()) | {"customer_id": ""}))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"schema": 2, "kind": "transition"}', "unsupported history schema 2"),
        (
            b'{"schema": 1, "kind": "mystery", "id": "x", "customer_id": "c",'
            b' "at": "2026-01-01T00:00:00+00:00"}',
            "'mystery' record",
        ),
        (h.transition("ada", "decision", move="sideways"), "move"),
        (
            orjson.dumps(orjson.loads(h.rule("ada", "nudge", "fired")) | {"at": "yesterday"}),
            "at",
        ),
        (
            orjson.dumps(
                orjson.loads(h.rule("ada", "nudge", "fired")) | {"at": "2026-01-01T00:00:00"}
            ),
            "timezone",
        ),
    ],
)
def test_a_record_off_contract_is_refused_with_a_reason(value: bytes, message: str) -> None:
    with pytest.raises(RecordDecodeError, match=message) as caught:
        decode_record(value)
    assert caught.value.retriable is False


def test_action_progress_only_grows_and_a_success_is_final() -> None:
    order = [
        action_progress("pending", 0),
        action_progress("retrying", 1),
        action_progress("failed", 1),
        action_progress("retrying", 2),
        action_progress("failed", 3),
        action_progress("sent", 1),
    ]
    assert order == sorted(order)
    assert len(set(order)) == len(order)
    assert action_progress("sent", 1) > action_progress("retrying", 50)


def test_a_kafka_timestamp_past_year_9999_falls_back_to_the_records_own_time() -> None:
    fallback = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        ConsumerRecord("t", 0, 0, stamp, 0, None, b"{}", None, 0, 2, [])
        for stamp in (253_402_300_800_000, -1, 1_767_225_600_000)
    ]
    assert [_produced_at(r, fallback) for r in records] == [fallback, fallback, fallback]
