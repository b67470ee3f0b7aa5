"""The kafka channel: the rendered payload, in the webhook body's envelope, to a named topic.

The envelope (``id``, ``rule``, ``customer_id``, ``created_at``, ``payload``) lets consumers
of that topic recognise a redelivery by ``id``, as webhook receivers do; the record is keyed
by customer so that one customer's actions stay in order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.orchestrator.dispatcher.channels import Delivered, envelope
from services.orchestrator.dispatcher.exceptions import DeliveryError
from shared.actions import ActionRecord
from shared.templates import TemplateRenderer
from shared.topics import is_safar_topic

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class KafkaChannel:
    def __init__(
        self, producer: AIOKafkaProducer, renderer: TemplateRenderer, *, timeout_s: float
    ) -> None:
        self._producer = producer
        self._renderer = renderer
        self._timeout_s = timeout_s

    async def deliver(self, action: ActionRecord, context: Mapping[str, Any]) -> Delivered:
        spec = action.spec
        topic = self._renderer.render(str(spec.get("topic") or ""), context, field="topic").strip()
        if not _TOPIC_NAME.fullmatch(topic):
            raise DeliveryError(f"{topic!r} is not a Kafka topic name", retriable=False)
        if is_safar_topic(topic):  # a template may render one, whatever the rule said
            raise DeliveryError(f"{topic!r} is one of Safar's own topics", retriable=False)
        payload = self._renderer.render_tree(spec.get("payload") or {}, context, field="payload")
        value = orjson.dumps(envelope(action, payload))
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.send_and_wait(
                    topic,
                    value,
                    key=action.customer_id.encode(),
                    headers=[("safar-action-id", action.action_id.encode())],
                )
        except TimeoutError as exc:
            raise DeliveryError(
                f"Kafka did not acknowledge the record on {topic} within {self._timeout_s:g}s",
                retriable=True,
            ) from exc
        except KafkaError as exc:
            raise DeliveryError(
                f"producing to {topic} failed: {type(exc).__name__}: {exc}",
                retriable=bool(getattr(exc, "retriable", True)),
            ) from exc
        return Delivered()
