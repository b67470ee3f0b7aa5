"""What every channel offers the dispatcher, and the body webhook and kafka share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.actions import ActionRecord

CHANNELS = ("webhook", "email", "kafka", "log")


@dataclass(frozen=True, slots=True)
class Delivered:
    """One successful attempt; ``status_code`` is the receiver's (HTTP or SMTP), if any."""

    status_code: int | None = None


class Channel(Protocol):
    async def deliver(self, action: ActionRecord, context: Mapping[str, Any]) -> Delivered:
        """Render ``action`` with ``context`` and deliver it once.

        Raises :class:`~services.orchestrator.dispatcher.exceptions.DeliveryError`, whose
        ``retriable`` flag says whether another attempt may succeed.
        """
        ...


def envelope(action: ActionRecord, payload: Any) -> dict[str, Any]:
    """The JSON body of a webhook and of a kafka-channel record (DESIGN §7); ``id`` lets
    receivers recognise a redelivery."""
    return {
        "id": action.action_id,
        "rule": action.rule,
        "customer_id": action.customer_id,
        "created_at": action.created_at,
        "payload": payload,
    }
