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
# The fields of an action block that hold credentials. Action records (on safar.actions, in
# retry schedules and in dead letters) leave them out and name them in ``sealed``; the
# dispatcher takes them from the rule in the configuration in force when it delivers.
SEALED_FIELDS = ("secret", "headers")


def seal(spec: dict[str, Any]) -> dict[str, Any]:
    """The action block as an action record carries it: without its credentials."""
    sealed = [name for name in SEALED_FIELDS if name in spec]
    if not sealed:
        return spec
    kept = {name: value for name, value in spec.items() if name not in SEALED_FIELDS}
    kept["sealed"] = sealed
    return kept


def unseal(spec: dict[str, Any], rule_spec: dict[str, Any]) -> dict[str, Any]:
    """A record's action block with the credentials it names taken from ``rule_spec``, the
    rule's action block as configured now (a rotated secret is the new one). Only those it
    names: headers added to the rule since may not suit the record's url."""
    sealed = spec.get("sealed")
    if not isinstance(sealed, list):
        return spec
    full = {name: value for name, value in spec.items() if name != "sealed"}
    full.update(
        {name: rule_spec[name] for name in SEALED_FIELDS if name in sealed and name in rule_spec}
    )
    return full


def action_id(rule_key: str, rule_version: int, customer_id: str, cause: str) -> str:
    """hash(rule key, rule version, customer, trigger event id or wait key)."""
    raw = "\x1f".join((rule_key, str(rule_version), customer_id, cause))
    return "act_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class ActionDecodeError(ValueError):
    retriable = False


@dataclass(slots=True)
class ActionRecord:
    """One action to deliver. ``spec`` is the rule's ``action`` block, templates unrendered
    and credentials sealed (see :func:`seal`); ``customer`` and ``trigger`` are the profile
    view and event view at fire time."""

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
