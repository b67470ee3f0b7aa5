"""Email through a real SMTP server (aiosmtpd), the kafka channel and the log channel."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.orchestrator.dispatcher.email import EmailChannel
from services.orchestrator.dispatcher.exceptions import DeliveryError
from services.orchestrator.dispatcher.kafka_channel import KafkaChannel
from shared.settings import Settings
from shared.templates import TemplateRenderer, template_context
from shared.topics import Topics
from tests.delivery.conftest import (
    StartDispatcher,
    TopicReader,
    action_records,
    make_action,
    publish,
    sample,
)
from tests.delivery.smtp_server import Mailbox, message_count
from tests.stack import eventually

pytestmark = pytest.mark.timeout(60)

Reader = Callable[[str], Awaitable[TopicReader]]


async def test_the_thank_you_email_arrives_rendered_in_text_and_html(
    dispatch_settings: Settings,
    smtp_server: tuple[Mailbox, int],
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    mailbox, port = smtp_server
    action = make_action(
        {
            "channel": "email",
            "to": "{{ customer.traits.email }}",
            "subject": "Thank you, {{ customer.traits.name }}!",
            "body": (
                "Hi {{ customer.traits.name }}, thanks for order {{ trigger.properties.order_id }}."
            ),
            "html": "<p>Hi {{ customer.traits.name }}, thanks!</p>",
        },
        traits={"name": "Ada & Co", "email": "ada@example.com"},
        trigger={"name": "Order Completed", "properties": {"order_id": "o-42"}},
        trigger_received_at="2026-01-02T03:04:04.000000+00:00",
    )
    history = await read_topic(Topics(dispatch_settings.namespace).history)
    timed_before = sample("safar_event_to_action_seconds_count")
    await start_dispatcher(
        smtp_host="127.0.0.1", smtp_port=port, smtp_sender="Shop <shop@example.com>"
    )
    await publish(producer, dispatch_settings, action)

    await eventually(message_count(mailbox), lambda n: n >= 1, what="the email")
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ada@example.com"]
    assert message["Subject"] == "Thank you, Ada & Co!"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == "ada@example.com"
    assert message["Message-ID"] == f"<{action.action_id}@safar>"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Hi Ada & Co, thanks for order o-42."
    assert html.get_content().strip() == "<p>Hi Ada &amp; Co, thanks!</p>"
    records = await history.wait_for(
        lambda h: len(action_records(h, action.action_id)) >= 1, "a sent record"
    )
    [sent] = action_records(records, action.action_id)
    assert (sent["channel"], sent["status"], sent["status_code"]) == ("email", "sent", 250)

    # trigger_received_at -> delivered is measured once per delivered action, once stored.
    async def timed() -> float:
        return sample("safar_event_to_action_seconds_count")

    await eventually(timed, lambda n: n == timed_before + 1, what="the delivery timed")
    assert sample("safar_actions_total", channel="email", status="sent") >= 1


async def test_a_refused_recipient_fails_at_once(
    dispatch_settings: Settings,
    smtp_server: tuple[Mailbox, int],
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    mailbox, port = smtp_server
    refused = make_action(
        {"channel": "email", "to": mailbox.refuse, "subject": "Hi", "body": "Hello"}
    )
    to_trait = {"channel": "email", "to": "{{ customer.traits.email }}", "subject": "Hi"}
    empty = make_action(to_trait | {"body": "."})
    # A customer's trait naming more recipients than the customer: none of them gets it.
    several = make_action(
        to_trait | {"body": "Your reset link"},
        traits={"email": "ada@example.com, eve@example.com"},
    )
    # A list the rule itself spells out is the rule's own: it goes to each.
    listed = make_action(
        {"channel": "email", "to": "ops@example.com, a@example.com", "subject": "Hi", "body": "."}
    )
    dlq = await read_topic(Topics(dispatch_settings.namespace).dlq)
    await start_dispatcher(smtp_host="127.0.0.1", smtp_port=port)
    await publish(producer, dispatch_settings, refused, empty, several, listed)

    letters = await dlq.wait_for(lambda d: len(d) >= 3, "three dead letters")
    errors = {letter["original"]["action_id"]: letter for letter in letters}
    assert errors[refused.action_id]["attempts"] == 1
    assert "550" in errors[refused.action_id]["error"]
    assert "renders empty" in errors[empty.action_id]["error"]
    assert "one address" in errors[several.action_id]["error"]
    assert errors[several.action_id]["attempts"] == 1
    await eventually(message_count(mailbox), lambda n: n == 1, what="the listed email")
    [(recipients, _)] = mailbox.messages  # and nothing to the others
    assert recipients == ["ops@example.com", "a@example.com"]


async def test_the_kafka_channel_produces_the_rendered_payload_to_its_topic(
    dispatch_settings: Settings,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    topic = f"{dispatch_settings.namespace}.crm-loyalty"
    admin = AIOKafkaAdminClient(bootstrap_servers=dispatch_settings.require("kafka_bootstrap"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, replication_factor=1)])
    finally:
        await admin.close()
    action = make_action(
        {
            "channel": "kafka",
            "topic": topic,
            "payload": {"tier": "{{ customer.traits.tier }}", "n": 2},
        },
        traits={"tier": "gold"},
    )
    out = await read_topic(topic)
    await start_dispatcher()
    await publish(producer, dispatch_settings, action)

    [record] = await out.wait_for(lambda values: len(values) >= 1, "the kafka record")
    assert record == {
        "id": action.action_id,
        "rule": "thank-you",
        "customer_id": "ada",
        "created_at": action.created_at,
        "payload": {"tier": "gold", "n": 2},
    }
    assert out.raw[0][0] == b"ada"


async def test_the_log_channel_writes_one_structured_line(
    dispatch_settings: Settings,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.orchestrator.dispatcher.log_channel")
    action = make_action({"channel": "log", "message": "{{ customer.traits.name }} bought again"})
    history = await read_topic(Topics(dispatch_settings.namespace).history)
    await start_dispatcher()
    await publish(producer, dispatch_settings, action)

    await history.wait_for(lambda h: len(action_records(h, action.action_id)) >= 1, "a record")
    [line] = [r for r in caplog.records if getattr(r, "action_id", None) == action.action_id]
    fields: dict[str, Any] = vars(line)
    assert fields["action_message"] == "Ada bought again"
    assert (fields["rule"], fields["customer_id"]) == ("thank-you", "ada")


async def test_an_smtp_server_answering_slowly_is_given_one_deadline_in_all(
    dispatch_settings: Settings,
) -> None:
    """Each answer comes within the per-command timeout, the whole exchange does not."""

    async def answer_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: bytes) -> None:
            await asyncio.sleep(0.3)
            writer.write(line + b"\r\n")
            await writer.drain()

        await say(b"220 slow.example ESMTP")
        while line := await reader.readline():
            if line.upper().startswith(b"DATA"):
                await say(b"354 go ahead")
                while (await reader.readline()) not in (b".\r\n", b""):
                    pass
            await say(b"250 OK")
        writer.close()

    server = await asyncio.start_server(answer_slowly, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = dispatch_settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_timeout_s": 1.0}
    )
    channel = EmailChannel(settings, TemplateRenderer())
    action = make_action(
        {"channel": "email", "to": "ada@example.com", "subject": "Hi", "body": "."}
    )
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match="TimeoutError") as failed:
            await channel.deliver(action, template_context(action))
    finally:
        server.close()
    assert failed.value.retriable
    assert time.monotonic() - started < 1.8


async def test_the_kafka_channel_refuses_safars_own_topics_however_they_render(
    producer: AIOKafkaProducer,
) -> None:
    channel = KafkaChannel(producer, TemplateRenderer(), timeout_s=5.0)
    for topic in ("safar.config", "ns.safar.events"):
        action = make_action(
            {"channel": "kafka", "topic": "{{ customer.traits.t }}", "payload": {"a": 1}},
            traits={"t": topic},
        )
        with pytest.raises(DeliveryError, match="one of Safar's own topics") as refused:
            await channel.deliver(action, template_context(action))
        assert not refused.value.retriable
