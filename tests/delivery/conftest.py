"""Delivery tests: the dispatcher against real Kafka and Redis, a real webhook receiver and
a real SMTP server. Retry schedules are short so that the tests stay quick."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from pydantic import SecretStr
from redis.asyncio import Redis

from services.orchestrator.active_config import ActiveConfig
from services.orchestrator.dispatcher import Dispatcher
from services.orchestrator.dispatcher.delivery_log import DeliveryLog, RecordedOutcome
from shared.actions import ActionRecord, action_id
from shared.dispatch_keys import DispatchKeys
from shared.embedded import free_port
from shared.kafka import make_consumer, make_producer
from shared.settings import Settings
from shared.topics import Topics
from tests.delivery.receiver import WebhookReceiver
from tests.delivery.smtp_server import Mailbox
from tests.stack import eventually

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture
def dispatch_settings(settings: Settings) -> Settings:
    """The test namespace, private targets allowed (the receiver is on 127.0.0.1)."""
    return settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout_s": 10.0,  # a stall of the test's loop is not a timeout
            "dispatch_retry_schedule_s": [0.2, 0.4, 0.8],
            "dispatch_retry_jitter": 0.25,
            "dispatch_retry_poll_s": 0.02,
            # Tansu holds a new group's first join for half the session timeout.
            "dispatch_session_timeout_ms": 2000,
        }
    )


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = await WebhookReceiver(SECRET).start()
    yield server
    await server.stop()


@pytest.fixture
async def redis(dispatch_settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(dispatch_settings.require("redis_url"))
    yield client
    await client.aclose()


@pytest.fixture
async def producer(dispatch_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    client = make_producer(dispatch_settings)
    await client.start()
    yield client
    await client.stop()


StartDispatcher = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def start_dispatcher(
    dispatch_settings: Settings, redis: Redis, producer: AIOKafkaProducer
) -> AsyncIterator[StartDispatcher]:
    """``await start_dispatcher(config=..., **setting_overrides)``: an in-process dispatcher
    (with no configuration unless given one)."""
    async with AsyncExitStack() as stack:

        async def start(*, config: ActiveConfig | None = None, **overrides: Any) -> Dispatcher:
            settings = dispatch_settings.model_copy(update=overrides)
            dispatcher = Dispatcher(settings, redis, producer, config or ActiveConfig())
            await stack.enter_async_context(dispatcher)
            return dispatcher

        yield start


def make_action(
    spec: dict[str, Any],
    *,
    customer_id: str = "ada",
    rule: str = "thank-you",
    traits: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    trigger_received_at: str | None = None,
) -> ActionRecord:
    """An action as the orchestrator emits it, with a fresh id."""
    return ActionRecord(
        action_id=action_id(rule, 1, customer_id, uuid.uuid4().hex),
        rule=rule,
        rule_version=1,
        customer_id=customer_id,
        channel=spec["channel"],
        spec=spec,
        customer={"id": customer_id, "traits": traits or {"name": "Ada"}, "counts": {}},
        trigger=trigger,
        created_at="2026-01-02T03:04:05.000000+00:00",
        trigger_received_at=trigger_received_at,
    )


async def publish(producer: AIOKafkaProducer, settings: Settings, *actions: ActionRecord) -> None:
    topic = Topics(settings.namespace).actions
    for action in actions:
        await producer.send_and_wait(topic, action.to_json(), key=action.customer_id.encode())


async def recorded_outcome(redis: Redis, settings: Settings, aid: str) -> RecordedOutcome | None:
    return await DeliveryLog(redis, DispatchKeys(settings.namespace), 60).lookup(aid)


class TopicReader:
    """Everything on one topic from the beginning, without a consumer group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._consumer: AIOKafkaConsumer = make_consumer(settings, topic, group_id=None)
        self.values: list[dict[str, Any]] = []
        self.raw: list[tuple[bytes | None, bytes]] = []

    async def poll(self) -> list[dict[str, Any]]:
        batch = await self._consumer.getmany(timeout_ms=50)
        for records in batch.values():
            for record in records:
                self.raw.append((record.key, record.value or b""))
                self.values.append(orjson.loads(record.value or b"{}"))
        return self.values

    async def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        return await eventually(self.poll, done, timeout=timeout, interval=0.01, what=what)


@pytest.fixture
async def read_topic(
    dispatch_settings: Settings,
) -> AsyncIterator[Callable[[str], Awaitable[TopicReader]]]:
    async with AsyncExitStack() as stack:

        async def open_reader(topic: str) -> TopicReader:
            reader = TopicReader(dispatch_settings, topic)
            await reader._consumer.start()
            stack.push_async_callback(reader._consumer.stop)
            return reader

        yield open_reader


def action_records(history: list[dict[str, Any]], aid: str) -> list[dict[str, Any]]:
    return [r for r in history if r.get("kind") == "action" and r.get("action_id") == aid]


def sample(name: str, **labels: str) -> float:
    """A metric of this process (the in-process dispatcher's), 0 when never observed."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server on a free port: ``(mailbox, port)``."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()
