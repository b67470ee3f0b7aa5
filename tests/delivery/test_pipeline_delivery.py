"""From an event to a person: Order Completed on safar.events -> the orchestrator process
(role all: rules, then the dispatcher) -> a thank-you email and a signed CRM webhook."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from shared.events import Event, format_time
from shared.settings import Settings
from tests.delivery.receiver import Reply, WebhookReceiver
from tests.delivery.smtp_server import Mailbox, message_count
from tests.kafka_io import event, produce_events, publish_config
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(90)


async def test_an_order_gets_its_thank_you_email_and_crm_webhook(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    smtp_server: tuple[Mailbox, int],
    service: Callable[..., ServiceProcess],
) -> None:
    mailbox, smtp_port = smtp_server
    crm = receiver.script("crm", [Reply(503, {"retry-after": "0"}), Reply(200)])
    await publish_config(
        dispatch_settings,
        {
            "journeys": [
                {
                    "key": "purchase",
                    "stages": [
                        {"key": "awareness", "when": "true"},
                        {"key": "purchase", "when": 'event.name == "Order Completed"'},
                    ],
                }
            ],
            "rules": [
                {
                    "key": "thank-you",
                    "trigger": {"event": "Order Completed"},
                    "action": {
                        "channel": "email",
                        "to": "{{ customer.traits.email }}",
                        "subject": "Thank you, {{ customer.traits.name }}!",
                        "body": "Dear {{ customer.traits.name }}, order "
                        "{{ trigger.properties.order_id }} is on its way.",
                    },
                },
                {
                    "key": "crm-purchase",
                    "trigger": {"event": "Order Completed"},
                    "action": {
                        "channel": "webhook",
                        "url": crm,
                        "payload": {"order": "{{ trigger.properties.order_id }}"},
                    },
                },
            ],
        },
    )
    settings = dispatch_settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port}
    )
    orchestrator = await service("orchestrator", settings_=settings).start()
    now = format_time(datetime.now(UTC))
    identify = Event(
        message_id=str(uuid.uuid4()),
        type="identify",
        customer_id="ada",
        user_id="ada",
        timestamp=now,
        received_at=now,
        traits={"email": "ada@example.com", "name": "Ada"},
    )
    await produce_events(settings, [identify, event("ada", "Order Completed", order_id="o-7")])

    await eventually(message_count(mailbox), lambda n: n >= 1, timeout=30, what="the email")
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ada@example.com"]
    assert message["Subject"] == "Thank you, Ada!"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().strip() == "Dear Ada, order o-7 is on its way."

    async def crm_deliveries() -> int:
        return len(receiver.at("crm"))

    await eventually(crm_deliveries, lambda n: n >= 2, timeout=30, what="the webhook, retried")
    first, second = receiver.at("crm")
    assert first.verified and second.verified
    assert first.webhook_id == second.webhook_id
    assert second.json()["payload"] == {"order": "o-7"}

    async def counted() -> tuple[float, float, float, float]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{orchestrator.url}/metrics")).text
        return (
            metric_value(text, "safar_actions_total", channel="email", status="sent"),
            metric_value(text, "safar_actions_total", channel="webhook", status="sent"),
            metric_value(text, "safar_actions_total", channel="webhook", status="retrying"),
            metric_value(text, "safar_event_to_action_seconds_count"),
        )

    # Each delivery is counted once its outcome is recorded, which can follow its arrival.
    await eventually(counted, lambda c: c == (1, 1, 1, 2), what="both deliveries counted")
