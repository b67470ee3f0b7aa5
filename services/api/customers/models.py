"""Customer responses: timeline items, actions, erasure receipts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.api.history.records import ActionStatus


class _Item(BaseModel):
    id: str = Field(description="The history record's id")
    at: datetime


class EventItem(_Item):
    kind: Literal["event"] = "event"
    event_id: str
    type: str
    name: str | None
    event: dict[str, Any] = Field(description="The event as the orchestrator received it")


class TransitionItem(_Item):
    kind: Literal["transition"] = "transition"
    journey: str
    from_stage: str | None
    to_stage: str
    move: str
    event_id: str | None


class RuleItem(_Item):
    kind: Literal["rule"] = "rule"
    rule: str
    rule_version: int
    outcome: str
    action_id: str | None
    detail: Any = None


class ActionItem(_Item):
    kind: Literal["action"] = "action"
    action_id: str
    rule: str
    channel: str
    status: str
    attempt: int
    status_code: int | None
    error: str | None


class ConversionItem(_Item):
    kind: Literal["conversion"] = "conversion"
    rule: str
    action_id: str | None
    group: str


TimelineItem = Annotated[
    EventItem | TransitionItem | RuleItem | ActionItem | ConversionItem,
    Field(discriminator="kind"),
]


class TimelineOut(BaseModel):
    customer_id: str
    items: list[TimelineItem] = Field(description="Oldest first")
    truncated: bool = Field(
        description="More items exist after the last one: raise `limit` "
        "or pass the last item's `at` as `since`"
    )


class ActionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    action_id: str = Field(description="The dedupe key: one action, however often retried")
    customer_id: str
    rule: str
    channel: str | None
    status: ActionStatus
    attempts: int
    status_code: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class ErasureOut(BaseModel):
    customer_id: str
    erased_at: datetime
    linked_ids: list[str] = Field(description="Anonymous ids linked to the customer, also erased")
    redis_keys: int = Field(description="Redis keys deleted (profiles, waits, identity links)")
    rows: dict[str, int] = Field(description="PostgreSQL rows deleted, per table")
