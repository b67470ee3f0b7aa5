"""Builders for ``safar.history`` records, spelled as the contract in shared/history.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import format_time
from shared.history import encode_record, record_id

# Three days ago at 10:00 UTC: in the past (the api's default range ends now), whole minutes.
T0 = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=3)


def at(minutes: float = 0) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


def transition(
    customer: str,
    to_stage: str,
    *,
    from_stage: str | None = None,
    move: str = "forward",
    journey: str = "purchase",
    minutes: float = 0,
    event_id: str | None = None,
) -> bytes:
    event_id = event_id or f"ev-{customer}-{to_stage}-{minutes}"
    return encode_record(
        "transition",
        record_id("transition", customer, journey, event_id),
        customer,
        journey=journey,
        from_stage=from_stage,
        to_stage=to_stage,
        move=move,
        at=at(minutes),
        event_id=event_id,
    )


def rule(
    customer: str,
    rule_key: str,
    outcome: str,
    *,
    action_id: str | None = None,
    minutes: float = 0,
    cause: str = "cause",
) -> bytes:
    return encode_record(
        "rule",
        record_id("rule", customer, rule_key, outcome, cause),
        customer,
        rule=rule_key,
        rule_version=1,
        outcome=outcome,
        action_id=action_id,
        detail=None,
        at=at(minutes),
    )


def action(
    customer: str,
    rule_key: str,
    action_id: str,
    status: str,
    attempt: int,
    *,
    minutes: float = 0,
    channel: str = "webhook",
    status_code: int | None = None,
    error: str | None = None,
) -> bytes:
    return encode_record(
        "action",
        record_id("action", action_id, str(attempt), status),
        customer,
        action_id=action_id,
        rule=rule_key,
        channel=channel,
        status=status,
        attempt=attempt,
        status_code=status_code,
        error=error,
        at=at(minutes),
    )


def conversion(
    customer: str, rule_key: str, action_id: str, group: str, *, minutes: float = 0
) -> bytes:
    return encode_record(
        "conversion",
        record_id("conversion", action_id),
        customer,
        rule=rule_key,
        action_id=action_id,
        group=group,
        event_id=f"goal-{action_id}",
        at=at(minutes),
    )


def event(customer: str, name: str, *, minutes: float = 0, **fields: Any) -> bytes:
    event_id = fields.pop("message_id", f"msg-{customer}-{name}-{minutes}")
    body = {
        "schema": 1,
        "message_id": event_id,
        "type": "track",
        "customer_id": customer,
        "user_id": customer,
        "name": name,
        "timestamp": at(minutes),
        "received_at": at(minutes),
        "properties": {},
    } | fields
    return encode_record(
        "event",
        record_id("event", event_id),
        customer,
        event_id=event_id,
        name=name,
        type="track",
        event=body,
        at=at(minutes),
    )
