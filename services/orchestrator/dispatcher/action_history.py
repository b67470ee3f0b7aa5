"""``action`` records on ``safar.history`` (see shared/history.py): one per outcome."""

from __future__ import annotations

from typing import Literal

from shared.actions import ActionRecord
from shared.history import encode_record, record_id

ActionStatus = Literal["sent", "failed", "retrying"]


def action_record(
    action: ActionRecord,
    *,
    status: ActionStatus,
    attempt: int,
    status_code: int | None,
    error: str | None,
    at: str,
    retry_at: str | None = None,
) -> bytes:
    """The history record of attempt ``attempt``; replays of it carry the same ``id``."""
    extra = {"retry_at": retry_at} if retry_at is not None else {}
    return encode_record(
        "action",
        record_id("action", action.action_id, status, str(attempt)),
        action.customer_id,
        action_id=action.action_id,
        rule=action.rule,
        channel=action.channel,
        status=status,
        attempt=attempt,
        status_code=status_code,
        error=error,
        at=at,
        **extra,
    )
