"""Typed records of ``safar.history`` (the contract is ``shared/history.py``) and the event
archive read from ``safar.events``; pure, no I/O.

A record that does not follow the contract raises :class:`RecordDecodeError`, which is
never retriable: the recorder dead-letters it and moves on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.events import Event, EventDecodeError
from shared.history import HISTORY_SCHEMA, record_id

Kind = Literal["transition", "rule", "action", "conversion", "event"]
KINDS: tuple[Kind, ...] = ("transition", "rule", "action", "conversion", "event")
ActionStatus = Literal["pending", "held_out", "suppressed", "retrying", "failed", "sent"]


class RecordDecodeError(ValueError):
    """A value on ``safar.history`` that is not a record of the contract."""

    retriable = False


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: Literal[1] = Field(alias="schema")
    id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    at: AwareDatetime


class TransitionRecord(_Record):
    kind: Literal["transition"]
    journey: str
    from_stage: str | None = None
    to_stage: str
    move: Literal["enter", "forward", "skip", "backward"]
    event_id: str | None = None


class RuleRecord(_Record):
    kind: Literal["rule"]
    rule: str
    rule_version: int
    outcome: Literal[
        "triggered", "scheduled", "cancelled", "suppressed", "held_out", "fired", "error"
    ]
    action_id: str | None = None
    detail: Any = None


class ActionOutcomeRecord(_Record):
    kind: Literal["action"]
    action_id: str = Field(min_length=1)
    rule: str
    channel: str
    status: Literal["sent", "failed", "retrying"]
    attempt: int = Field(ge=0)
    status_code: int | None = None
    error: str | None = None


class ConversionRecord(_Record):
    kind: Literal["conversion"]
    rule: str
    action_id: str | None = None
    group: Literal["treated", "holdout"]
    event_id: str


_ENVELOPE = {"schema", "kind", "id", "customer_id", "at", "event_id", "name", "type", "event"}


class EventRecord(_Record):
    kind: Literal["event"]
    event_id: str = Field(min_length=1)
    name: str | None = None
    type: str
    event: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _event_body(cls, data: Any) -> Any:
        """The event may be nested under ``event`` or spread beside the envelope."""
        if isinstance(data, dict) and not isinstance(data.get("event"), dict):
            data = data | {"event": {k: v for k, v in data.items() if k not in _ENVELOPE}}
        if isinstance(data, dict) and "at" not in data:
            data = data | {"at": data["event"].get("timestamp")}
        return data


HistoryRecord = TransitionRecord | RuleRecord | ActionOutcomeRecord | ConversionRecord | EventRecord
_DISCRIMINATED: Any = Annotated[HistoryRecord, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[HistoryRecord] = TypeAdapter(_DISCRIMINATED)


def decode_record(raw: bytes | None) -> HistoryRecord:
    """One Kafka value as a typed record; raises :class:`RecordDecodeError`."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordDecodeError("a history record is a JSON object")
    if data.get("schema") != HISTORY_SCHEMA:
        raise RecordDecodeError(f"unsupported history schema {data.get('schema')!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordDecodeError(f"{data.get('kind')!r} record, {where}: {first['msg']}") from exc


def archived_event(raw: bytes | None) -> EventRecord:
    """A value of ``safar.events`` as its archive record: the recorder reads the events
    topic itself, so the orchestrator does not publish every event a second time."""
    try:
        event = Event.from_json(raw or b"")
        return EventRecord.model_validate(
            {
                "schema": HISTORY_SCHEMA,
                "kind": "event",
                "id": record_id("event", event.message_id),
                "customer_id": event.customer_id,
                "at": event.timestamp,
                "event_id": event.message_id,
                "name": event.name,
                "type": event.type,
                "event": orjson.loads(raw or b""),
            }
        )
    except EventDecodeError as exc:
        raise RecordDecodeError(str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordDecodeError(f"event, {where}: {first['msg']}") from exc


# What is known about an action, in the order it can only grow: a decision, then delivery
# attempts, and a success is final. Late or replayed records never lower it.
_STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "held_out": 0,
    "suppressed": 0,
    "retrying": 1,
    "failed": 2,
    "sent": 3,
}


def action_progress(status: str, attempt: int) -> int:
    """A number that increases with everything learnt about one action."""
    return (1 << 40 if status == "sent" else 0) + min(attempt, 1 << 30) * 8 + _STATUS_RANK[status]


_DECIDED: dict[str, ActionStatus] = {
    "fired": "pending",
    "held_out": "held_out",
    "suppressed": "suppressed",
}


def decided_status(outcome: str) -> ActionStatus | None:
    """The action status a rule decision implies, when the decision names an action."""
    return _DECIDED.get(outcome)
