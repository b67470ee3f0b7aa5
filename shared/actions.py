"""Actions on ``safar.actions``: what the dispatcher delivers (DESIGN §4, §7).

The orchestrator decides and emits; the dispatcher renders the templates and delivers.
``action_id`` is deterministic, so a re-emitted action is recognised and never sent twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

ACTION_SCHEMA = 1


def action_id(rule_key: str, rule_version: int, customer_id: str, cause: str) -> str:
    """hash(rule key, rule version, customer, trigger event id or wait key)."""
    raw = "\x1f".join((rule_key, str(rule_version), customer_id, cause))
    return "act_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class ActionDecodeError(ValueError):
    retriable = False


@dataclass(slots=True)
class ActionRecord:
    """One action to deliver. ``spec`` is the rule's ``action`` block, templates unrendered;
    ``customer`` and ``trigger`` are the profile view and event view at fire time."""

    action_id: str
    rule: str
    rule_version: int
    customer_id: str
    channel: str
    spec: dict[str, Any]
    customer: dict[str, Any]
    trigger: dict[str, Any] | None
    created_at: str  # when the orchestrator fired it (ISO, UTC)
    trigger_received_at: str | None = None  # ingest's receivedAt of the triggering event
    attempt: int = 0  # delivery attempts already made (retries re-publish with attempt+1)
    not_before: str | None = None  # a retry is not attempted before this time
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = ACTION_SCHEMA

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> ActionRecord:
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("schema") != ACTION_SCHEMA:
                raise ActionDecodeError(f"unsupported action schema: {data!r:.200}")
            return cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ActionDecodeError(f"not an action record: {exc}") from exc
