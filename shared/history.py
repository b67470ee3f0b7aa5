"""Records on ``safar.history``: transitions, action outcomes, conversions (DESIGN §4)."""

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
