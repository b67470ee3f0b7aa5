"""End to end with the real online-shop example (examples/online-shop.yaml): a customer views,
adds to cart and buys -> the thank-you email and webhook arrive once, and the abandoned-cart
nudge does not fire, because the purchase came first. A second customer who never buys is
the canary: their nudge does arrive, after the first customer's deadline, so the timer loop
demonstrably ran past that deadline and the silence for the first customer means something."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.api.config.bundle_parser import parse_bundle
from shared.actions import ActionRecord
from shared.events import Event, format_time
from shared.settings import Settings
from shared.topics import Topics
from tests.delivery.conftest import TopicReader
from tests.delivery.receiver import Received, Reply, WebhookReceiver
from tests.delivery.smtp_server import Mailbox, message_count
from tests.kafka_io import TopicReader as WholeTopic
from tests.kafka_io import event, produce_events, publish_config
from tests.stack import ServiceProcess, eventually

pytestmark = pytest.mark.timeout(150)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "online-shop.yaml"

# The example waits 30m (+ 2m grace) before nudging; a test cannot. The same rule with a
# few seconds keeps its trigger, `if`, wait key and `unless` exactly as written.
WAIT_S = 6
GRACE_S = 2
# After the canary's nudge: how long to keep listening for a nudge to the buyer. The canary
# proves the timer loop passed the buyer's deadline; this covers the dispatcher's lag.
SETTLE_S = 3.0

Reader = Callable[[str], Awaitable[TopicReader]]


def shop_bundle(receiver: WebhookReceiver) -> dict[str, Any]:
    """The example as the api parses it, adjusted for a test run (each change explained)."""
    bundle = parse_bundle(EXAMPLE.read_bytes(), "application/yaml").document()
    rules = {rule["key"]: rule for rule in bundle["rules"]}

    # What this test relies on the example to contain; a change there should fail loudly here.
    thank_you, nudge = rules["thank-you"], rules["abandoned-cart"]
    assert rules["thank-you-crm"]["trigger"] == {"event": "Order Completed"}
    assert rules["thank-you-crm"]["action"]["channel"] == "webhook"
    assert thank_you["trigger"] == {"event": "Order Completed"}
    assert thank_you["action"]["channel"] == "email"
    assert "wait" not in thank_you
    assert nudge["trigger"] == {"event": "Product Added"}
    assert nudge["wait"]["unless"]["event"] == "Order Completed"
    assert nudge["action"]["channel"] == "webhook"

    # The example hard-codes its CRM (https://crm.example/...), not a template: every webhook
    # goes to the test receiver instead, at a path named after its rule.
    for rule in bundle["rules"]:
        if rule["action"]["channel"] == "webhook":
            rule["action"]["url"] = receiver.script(rule["key"], [Reply()])
    # Seconds instead of 30m + 2m (see WAIT_S).
    nudge["wait"]["for"] = f"{WAIT_S}s"
    nudge["wait"]["grace"] = f"{GRACE_S}s"
    # Quiet hours (21:00-08:00 Berlin) would defer the canary's nudge to the morning when
    # the suite runs at night; deferral is tested in tests/unit/test_rules.py, so it goes.
    del nudge["quiet_hours"]
    return bundle


def identify(customer: str, **traits: Any) -> Event:
    now = format_time(datetime.now(UTC))
    return Event(
        message_id=str(uuid.uuid4()),
        type="identify",
        customer_id=customer,
        user_id=customer,
        timestamp=now,
        received_at=now,
        traits=traits,
    )


def track(customer: str, name: str, properties: dict[str, Any]) -> Event:
    """A track event; properties as a dict, since the example's products have a `name`."""
    tracked = event(customer, name)
    tracked.properties = properties
    return tracked


def due_at(added: Event) -> float:
    """When the example's nudge for this Product Added is due: its deadline plus grace."""
    return datetime.fromisoformat(added.timestamp).timestamp() + WAIT_S + GRACE_S


def outcomes(history: list[dict[str, Any]], customer: str, rule: str) -> list[str]:
    return [
        r["outcome"]
        for r in history
        if r.get("kind") == "rule" and r.get("customer_id") == customer and r.get("rule") == rule
    ]


async def test_a_buyer_is_thanked_once_and_never_nudged_while_a_non_buyer_is_nudged(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    smtp_server: tuple[Mailbox, int],
    service: Callable[..., ServiceProcess],
    read_topic: Reader,
) -> None:
    mailbox, smtp_port = smtp_server
    topics = Topics(dispatch_settings.namespace)
    await publish_config(dispatch_settings, shop_bundle(receiver))
    settings = dispatch_settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port}
    )
    history = await read_topic(topics.history)
    await service("orchestrator", "--role", "all", settings_=settings).start()

    # The buyer: views, adds to cart c-1 (over the 20.0 the nudge's `if` asks), buys it.
    shoe = {"product_id": "p-1", "name": "Trail shoes", "price": 89.0}
    added = track("ada", "Product Added", {"cart_id": "c-1", **shoe})
    bought = track("ada", "Order Completed", {"cart_id": "c-1", "order_id": "o-1", "revenue": 89.0})
    await produce_events(
        settings,
        [
            identify("ada", email="ada@example.com", first_name="Ada"),
            track("ada", "Product Viewed", shoe),
            added,
            bought,
        ],
    )
    ada_deadline = due_at(added) - GRACE_S
    assert datetime.fromisoformat(bought.timestamp).timestamp() < ada_deadline
    # The canary: adds to cart c-2 after the buyer did, and never buys.
    jacket = {"product_id": "p-2", "name": "Rain jacket", "price": 35.0}
    canary_added = track("bob", "Product Added", {"cart_id": "c-2", **jacket})
    await produce_events(settings, [identify("bob", email="bob@example.com"), canary_added])
    assert due_at(canary_added) > due_at(added)

    # The thank-you email, rendered with the buyer's name and order.
    await eventually(message_count(mailbox), lambda n: n >= 1, timeout=60, what="the email")
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ada@example.com"]
    assert message["Subject"] == "Thank you for your order o-1!"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert text.startswith("Hi Ada,")
    assert "thank you for shopping with us" in text

    # The thank-you webhook to the CRM: signed, verified, rendered.
    [thanks] = await eventually(
        lambda: _arrived(receiver, "thank-you-crm"), bool, timeout=60, what="the thank-you webhook"
    )
    assert thanks.verified
    assert (thanks.json()["customer_id"], thanks.json()["rule"]) == ("ada", "thank-you-crm")
    assert thanks.json()["payload"] == {
        "template": "thank-you",
        "email": "ada@example.com",
        "order_id": "o-1",
    }

    # Both waits were scheduled (the buyer's cancellation is checked at the end).
    await history.wait_for(
        lambda h: all("scheduled" in outcomes(h, c, "abandoned-cart") for c in ("ada", "bob")),
        "both abandoned-cart waits scheduled",
        timeout=60,
    )

    # The canary's nudge: signed, verified, rendered, and later than the buyer's due time.
    async def canary_nudges() -> list[Received]:
        return [r for r in receiver.at("abandoned-cart") if r.json()["customer_id"] == "bob"]

    [nudge] = await eventually(
        canary_nudges, bool, timeout=WAIT_S + GRACE_S + 60, what="the canary's nudge"
    )
    assert nudge.verified
    assert nudge.wall > due_at(added)
    document = nudge.json()
    assert document["customer_id"] == "bob"
    assert document["rule"] == "abandoned-cart"
    assert document["payload"] == {
        "template": "abandoned-cart",
        "email": "bob@example.com",
        "cart_id": "c-2",
        "product": "Rain jacket",
    }

    # Absence can only be observed by listening a while: well past the buyer's deadline
    # plus grace, and past the canary's nudge (the same timer ticks would have fired both).
    await asyncio.sleep(max(0.0, max(due_at(added), nudge.wall) + SETTLE_S - time.time()))

    # No nudge for the buyer by any channel: nothing emitted, nothing delivered.
    async with WholeTopic(settings, topics.actions) as actions_topic:
        emitted = [ActionRecord.from_json(v) for v in await actions_topic.to_end()]
    assert sorted((a.customer_id, a.rule) for a in emitted) == [
        ("ada", "thank-you"),
        ("ada", "thank-you-crm"),
        ("bob", "abandoned-cart"),
    ]
    # Exactly two webhooks in all: the buyer's thanks and the canary's nudge.
    assert sorted((r.path, r.json()["customer_id"]) for r in receiver.received) == [
        ("abandoned-cart", "bob"),
        ("thank-you-crm", "ada"),
    ]
    assert len(mailbox.messages) == 1
    # ... and because the purchase came first: the buyer's wait was cancelled, not fired.
    async with WholeTopic(settings, topics.history) as history_topic:
        recorded = [orjson.loads(v) for v in await history_topic.to_end()]
    assert "cancelled" in outcomes(recorded, "ada", "abandoned-cart")
    assert "fired" not in outcomes(recorded, "ada", "abandoned-cart")
    assert "fired" in outcomes(recorded, "bob", "abandoned-cart")


async def _arrived(receiver: WebhookReceiver, path: str) -> list[Received]:
    return receiver.at(path)
