"""Plain-data builders for engine tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.definitions import Bundle, ConfigSnapshot
from shared.engine.compiled import CompiledConfig
from shared.events import Event, format_time

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
_ids = itertools.count()

PURCHASE = {
    "key": "purchase",
    "stages": [
        {"key": "awareness", "when": "true"},
        {"key": "consideration", "when": 'event.name in ["Product Viewed", "Products Searched"]'},
        {"key": "decision", "when": 'event.name in ["Product Added", "Checkout Started"]'},
        {"key": "purchase", "when": 'event.name == "Order Completed"'},
        {"key": "retention", "when": 'count("Order Completed") >= 2'},
        {
            "key": "loyalty",
            "when": 'count("Order Completed") >= 3 || event.name == "Referral Sent"',
        },
    ],
}


def config(*journeys: dict[str, Any], version: int = 1) -> CompiledConfig:
    bundle = Bundle.model_validate({"journeys": list(journeys) or [PURCHASE]})
    return CompiledConfig.compile(ConfigSnapshot(version=version, bundle=bundle))


def track(
    name: str,
    customer: str = "c1",
    *,
    minutes: int = 0,
    message_id: str | None = None,
    **properties: Any,
) -> Event:
    moment = format_time(T0 + timedelta(minutes=minutes))
    return Event(
        message_id=message_id or f"m{next(_ids)}",
        type="track",
        customer_id=customer,
        user_id=customer,
        timestamp=moment,
        received_at=moment,
        name=name,
        properties=properties,
    )


def bundle_config(
    journeys: list[dict[str, Any]] | None, rules: list[dict[str, Any]], version: int = 1
) -> CompiledConfig:
    """Compile journeys (default: the purchase journey) and rules like a real snapshot."""
    bundle = Bundle.model_validate(
        {"journeys": [PURCHASE] if journeys is None else journeys, "rules": rules}
    )
    return CompiledConfig.compile(ConfigSnapshot(version=version, bundle=bundle))


def webhook(url: str = "https://crm.example/hook") -> dict[str, Any]:
    return {"channel": "webhook", "url": url, "payload": {"customer": "{{ customer.id }}"}}
