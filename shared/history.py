"""Records on ``safar.history`` (DESIGN §4), consumed by the api's recorder.

Every record: ``{"schema": 1, "kind", "id", "customer_id", "at", ...}`` with ``at`` an ISO
time. ``id`` is deterministic so that a replayed record is recognised (the recorder's
unique key).

Kinds and their fields:

- ``transition``: ``journey``, ``from_stage`` (null on entry), ``to_stage``,
  ``move`` (enter | forward | skip | backward), ``event_id``.
- ``rule``: ``rule``, ``rule_version``, ``outcome`` (triggered | scheduled | cancelled |
  suppressed | held_out | fired | error), ``action_id`` (null when none), ``detail``,
  ``cause`` (the trigger event id or wait key).
- ``action``: ``action_id``, ``rule``, ``channel``, ``status`` (sent | failed | retrying),
  ``attempt``, ``status_code`` (null when none), ``error`` (null when none).
- ``conversion``: ``rule``, ``action_id``, ``group`` (treated | holdout), ``event_id``.
- ``event``: the normalized event itself (the archive), ``event_id``, ``name``, ``type``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

HISTORY_SCHEMA = 1


def record_id(*parts: str) -> str:
    """A deterministic id, so a replayed record is recognised downstream."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def encode_record(kind: str, record_id_: str, customer_id: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {"schema": HISTORY_SCHEMA, "kind": kind, "id": record_id_, "customer_id": customer_id}
        | fields
    )
