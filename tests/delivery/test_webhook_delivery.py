"""Webhooks end to end: real Kafka, Redis and an HTTP receiver verifying every signature."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from services.orchestrator.active_config import ActiveConfig
from shared.actions import ActionRecord
from shared.definitions import Bundle, ConfigSnapshot
from shared.dispatch_keys import DispatchKeys
from shared.engine.compiled import CompiledConfig
from shared.engine.process import process_event
from shared.events import format_time
from shared.profile import Profile
from shared.settings import Settings
from shared.topics import Topics
from tests.delivery.conftest import (
    SECRET,
    StartDispatcher,
    TopicReader,
    action_records,
    make_action,
    publish,
    recorded_outcome,
    sample,
)
from tests.delivery.receiver import Reply, WebhookReceiver
from tests.stack import eventually
from tests.unit.engine_data import track

pytestmark = pytest.mark.timeout(60)

Reader = Callable[[str], Awaitable[TopicReader]]


async def test_a_webhook_arrives_signed_with_the_rendered_payload_once(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    redis: Redis,
    read_topic: Reader,
) -> None:
    url = receiver.script("thanks", [Reply(200)])
    action = make_action(
        {
            "channel": "webhook",
            "url": url,
            "headers": {"x-campaign": "{{ rule.key }}"},
            "payload": {
                "greeting": "Thank you, {{ customer.traits.name }}!",
                "order": "{{ trigger.properties.order_id }}",
                "tags": ["{{ rule.key }}", 7],
            },
        },
        trigger={"name": "Order Completed", "properties": {"order_id": "o-1"}},
    )
    history = await read_topic(Topics(dispatch_settings.namespace).history)
    await start_dispatcher()
    await publish(producer, dispatch_settings, action)

    await eventually(lambda: _count(receiver, "thanks"), lambda n: n >= 1, what="delivery")
    [delivery] = receiver.at("thanks")
    assert delivery.verified
    assert delivery.webhook_id == action.action_id
    assert delivery.headers["x-campaign"] == "thank-you"
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.json() == {
        "id": action.action_id,
        "rule": "thank-you",
        "customer_id": "ada",
        "created_at": action.created_at,
        "payload": {"greeting": "Thank you, Ada!", "order": "o-1", "tags": ["thank-you", 7]},
    }
    await history.wait_for(
        lambda h: any(r["status"] == "sent" for r in action_records(h, action.action_id)),
        "a sent record",
    )
    [sent] = action_records(history.values, action.action_id)
    assert sent["customer_id"] == "ada"
    assert sent | {"id": None, "at": None} == {
        "schema": 1,
        "kind": "action",
        "id": None,
        "customer_id": "ada",
        "action_id": action.action_id,
        "rule": "thank-you",
        "channel": "webhook",
        "status": "sent",
        "attempt": 1,
        "status_code": 200,
        "error": None,
        "at": None,
    }
    outcome = await recorded_outcome(redis, dispatch_settings, action.action_id)
    assert outcome is not None and outcome.status == "sent"

    # The receiver really verifies: a tampered body or a wrong secret is rejected.
    async with httpx.AsyncClient() as client:
        tampered = delivery.body.replace(b"Ada", b"Eve")
        answer = await client.post(url, content=tampered, headers=delivery.headers)
        assert answer.status_code == 401
        forged = dict(delivery.headers, **{"webhook-signature": "v1,AAAA"})
        answer = await client.post(url, content=delivery.body, headers=forged)
        assert answer.status_code == 401

    # The same action again (a replay of safar.actions) is recognised and not sent: its
    # history record is republished with the same id instead.
    await publish(producer, dispatch_settings, action)
    records = await history.wait_for(
        lambda h: len(action_records(h, action.action_id)) == 2, "the republished record"
    )
    first, second = action_records(records, action.action_id)
    assert first == second
    assert [r.verified for r in receiver.at("thanks")] == [True, False, False]


async def test_500_three_times_then_200_is_delivered_once_on_schedule(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    url = receiver.script("flaky", [Reply(500), Reply(500), Reply(500), Reply(200)])
    action = make_action({"channel": "webhook", "url": url, "payload": {"n": 1}})
    history = await read_topic(Topics(dispatch_settings.namespace).history)
    before = await _webhook_metrics()
    await start_dispatcher()
    await publish(producer, dispatch_settings, action)

    records = await history.wait_for(
        lambda h: any(r["status"] == "sent" for r in action_records(h, action.action_id)),
        "delivered after three failures",
    )
    attempts = receiver.at("flaky")
    assert len(attempts) == 4
    assert all(a.verified for a in attempts)
    assert {a.webhook_id for a in attempts} == {action.action_id}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    schedule = dispatch_settings.dispatch_retry_schedule_s
    for gap, planned in zip(gaps, schedule, strict=True):
        # Never earlier than the schedule; later by at most the jitter (25%), polling and
        # a loaded machine's scheduling.
        assert planned <= gap <= planned * 1.25 + 2.0, (gaps, schedule)
    statuses = [
        (r["status"], r["attempt"], r["status_code"])
        for r in action_records(records, action.action_id)
    ]
    assert statuses == [
        ("retrying", 1, 500),
        ("retrying", 2, 500),
        ("retrying", 3, 500),
        ("sent", 4, 200),
    ]
    assert all(r["retry_at"] for r in action_records(records, action.action_id)[:3])
    # The counters move once the outcome is stored, which can come after the record is read.
    await eventually(
        _webhook_metrics,
        lambda after: (
            {k: after[k] - before[k] for k in after}
            == {"sent": 1, "retrying": 3, "failed": 0, "attempts timed": 4}
        ),
        what="the attempts counted",
    )

    # Nothing more comes for it: a later action arrives, the flaky one still has 4 attempts.
    marker = make_action({"channel": "webhook", "url": receiver.script("marker", [Reply()])})
    await publish(producer, dispatch_settings, marker)
    await eventually(lambda: _count(receiver, "marker"), lambda n: n == 1, what="the marker")
    await asyncio.sleep(dispatch_settings.dispatch_retry_schedule_s[0])
    assert len(receiver.at("flaky")) == 4


async def test_429_retry_after_is_honoured(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    url = receiver.script("busy", [Reply(429, {"retry-after": "1"}), Reply(200)])
    action = make_action({"channel": "webhook", "url": url})
    history = await read_topic(Topics(dispatch_settings.namespace).history)
    # Without Retry-After the next attempt would come after 0.05 s.
    await start_dispatcher(dispatch_retry_schedule_s=[0.05, 0.05])
    await publish(producer, dispatch_settings, action)

    records = await history.wait_for(
        lambda h: any(r["status"] == "sent" for r in action_records(h, action.action_id)),
        "delivered after the 429",
    )
    first, second = receiver.at("busy")
    assert 1.0 <= second.at - first.at <= 3.0  # Retry-After: 1, plus polling and scheduling
    assert [(r["status"], r["status_code"]) for r in action_records(records, action.action_id)] == [
        ("retrying", 429),
        ("sent", 200),
    ]


async def test_410_fails_after_one_attempt_and_is_dead_lettered(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    redis: Redis,
    read_topic: Reader,
) -> None:
    url = receiver.script("gone", [Reply(410)])
    action = make_action({"channel": "webhook", "url": url})
    topics = Topics(dispatch_settings.namespace)
    history = await read_topic(topics.history)
    dlq = await read_topic(topics.dlq)
    await start_dispatcher()
    await publish(producer, dispatch_settings, action)

    [letter] = await dlq.wait_for(lambda d: len(d) >= 1, "a dead letter")
    assert letter["kind"] == "action"
    assert letter["attempts"] == 1
    assert "410" in letter["error"]
    assert letter["original"]["action_id"] == action.action_id
    records = await history.wait_for(
        lambda h: len(action_records(h, action.action_id)) >= 1, "a failed record"
    )
    [failed] = action_records(records, action.action_id)
    assert (failed["status"], failed["attempt"], failed["status_code"]) == ("failed", 1, 410)
    assert len(receiver.at("gone")) == 1
    outcome = await recorded_outcome(redis, dispatch_settings, action.action_id)
    assert outcome is not None and outcome.status == "failed"


async def test_a_receiver_that_never_answers_in_time_fails_after_the_last_retry(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    url = receiver.script("stuck", [Reply(200, delay_s=1.0)])
    action = make_action({"channel": "webhook", "url": url})
    topics = Topics(dispatch_settings.namespace)
    history = await read_topic(topics.history)
    dlq = await read_topic(topics.dlq)
    await start_dispatcher(webhook_timeout_s=0.3, dispatch_retry_schedule_s=[0.1, 0.1])
    await publish(producer, dispatch_settings, action)

    [letter] = await dlq.wait_for(lambda d: len(d) >= 1, "a dead letter")
    assert letter["attempts"] == 3
    assert "gave up after 3 attempts" in letter["error"]
    assert "did not answer within 0.3s" in letter["error"]
    records = await history.wait_for(
        lambda h: len(action_records(h, action.action_id)) >= 3, "three records"
    )
    assert [
        (r["status"], r["attempt"], r["status_code"])
        for r in action_records(records, action.action_id)
    ] == [
        ("retrying", 1, None),
        ("retrying", 2, None),
        ("failed", 3, None),
    ]
    assert len(receiver.at("stuck")) == 3


async def test_a_slow_receiver_does_not_hold_up_the_partition(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
) -> None:
    slow = make_action({"channel": "webhook", "url": receiver.script("slow", [Reply(delay_s=4)])})
    fast = make_action({"channel": "webhook", "url": receiver.script("fast", [Reply()])})
    await start_dispatcher(webhook_timeout_s=10.0)
    # Same customer, so same partition; the fast one is read only once the slow one is
    # being delivered, in a later poll.
    await publish(producer, dispatch_settings, slow)
    await eventually(lambda: _count(receiver, "slow"), lambda n: n == 1, what="the slow one")
    await publish(producer, dispatch_settings, fast)

    await eventually(lambda: _count(receiver, "fast"), lambda n: n == 1, what="the fast one")
    [slow_arrival], [fast_arrival] = receiver.at("slow"), receiver.at("fast")
    assert fast_arrival.at - slow_arrival.at < 3.0, "the fast one waited for the slow one"


async def test_private_targets_are_refused_unless_allowed(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    action = make_action({"channel": "webhook", "url": receiver.script("inside", [Reply()])})
    dlq = await read_topic(Topics(dispatch_settings.namespace).dlq)
    await start_dispatcher(webhook_allow_private=False)
    await publish(producer, dispatch_settings, action)

    [letter] = await dlq.wait_for(lambda d: len(d) >= 1, "a dead letter")
    assert "private or loopback" in letter["error"]
    assert "SAFAR_WEBHOOK_ALLOW_PRIVATE" in letter["error"]
    assert letter["attempts"] == 1
    assert receiver.at("inside") == []


async def test_bad_actions_are_dead_lettered_and_the_dispatcher_goes_on(
    dispatch_settings: Settings,
    redis: Redis,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    url = receiver.script("fine", [Reply()])
    broken_template = make_action(
        {"channel": "webhook", "url": url, "payload": {"x": "{{ customer.traits.name | nope }}"}}
    )
    forbidden = make_action(
        {"channel": "webhook", "url": url, "payload": {"x": "{{ customer.__class__.__mro__ }}"}}
    )
    unknown_channel = make_action({"channel": "pigeon", "message": "coo"})
    bad_secret = make_action({"channel": "webhook", "url": url, "secret": "not base64!"})
    good = make_action({"channel": "webhook", "url": url})
    # Its recorded outcome is unreadable: it counts as finished, never sent.
    finished = make_action({"channel": "webhook", "url": url})
    await redis.set(DispatchKeys(dispatch_settings.namespace).outcome(finished.action_id), b"{")
    topics = Topics(dispatch_settings.namespace)
    dlq = await read_topic(topics.dlq)
    await start_dispatcher()
    wrong_type = orjson.loads(good.to_json()) | {"action_id": 5}
    # 260 levels in its customer: orjson reads that, and cannot write it back.
    deep = orjson.dumps(orjson.loads(good.to_json()) | {"action_id": "deep", "customer": "~"})
    deep = deep.replace(b'"~"', b'{"d":' + b"[" * 260 + b"]" * 260 + b"}")
    for raw in (
        b"\x00 not json",
        b'{"schema": 1, "action_id": "x"}',
        orjson.dumps(wrong_type),
        deep,
    ):
        await producer.send_and_wait(topics.actions, raw, key=b"ada")
    await publish(
        producer,
        dispatch_settings,
        broken_template,
        forbidden,
        unknown_channel,
        bad_secret,
        finished,
        good,
    )

    letters = await dlq.wait_for(lambda d: len(d) >= 8, "eight dead letters")
    [deep_letter] = [letter for letter in letters if "nests too deeply" in letter["error"]]
    assert deep_letter["original"] == {"base64": base64.b64encode(deep).decode()}
    letters.remove(deep_letter)
    errors = {str(letter["original"].get("action_id")): letter["error"] for letter in letters}
    assert "No filter named 'nope'" in errors[broken_template.action_id]
    assert "payload.x" in errors[broken_template.action_id]
    assert "templates may not do" in errors[forbidden.action_id]
    assert "unknown channel 'pigeon'" in errors[unknown_channel.action_id]
    assert "whsec_" in errors[bad_secret.action_id]
    assert "not an action record" in errors["None"]  # not JSON: kept as base64
    assert "not an action record" in errors["x"]  # fields missing
    assert "action field action_id has the wrong type" in errors["5"]
    assert {letter["kind"] for letter in letters} == {"action"}
    await eventually(lambda: _count(receiver, "fine"), lambda n: n == 1, what="the good one")
    assert [r.webhook_id for r in receiver.at("fine")] == [good.action_id]  # not `finished`


async def test_an_action_is_not_attempted_before_its_not_before_time(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
) -> None:
    action = make_action({"channel": "webhook", "url": receiver.script("later", [Reply()])})
    await start_dispatcher()
    published = time.monotonic()
    action.not_before = format_time(datetime.now(UTC) + timedelta(seconds=1.5))
    await publish(producer, dispatch_settings, action)

    await eventually(lambda: _count(receiver, "later"), lambda n: n == 1, what="the delivery")
    [arrival] = receiver.at("later")
    assert arrival.at - published >= 1.4
    assert arrival.webhook_id == action.action_id


async def _webhook_metrics() -> dict[str, float]:
    return {
        status: sample("safar_actions_total", channel="webhook", status=status)
        for status in ("sent", "retrying", "failed")
    } | {"attempts timed": sample("safar_action_delivery_seconds_count", channel="webhook")}


async def _count(receiver: WebhookReceiver, path: str) -> int:
    return len(receiver.at(path))


def _thank_you(url: str, bearer: str, version: int = 1) -> ConfigSnapshot:
    action = {
        "channel": "webhook",
        "url": url,
        "secret": SECRET,
        "headers": {"Authorization": f"Bearer {bearer}"},
    }
    rule = {"key": "thank-you", "trigger": {"event": "Order Completed"}, "action": action}
    return ConfigSnapshot(
        version=version,
        bundle=Bundle.model_validate({"rules": [rule]}),
        rule_versions={"thank-you": version},
    )


def _decided(snapshot: ConfigSnapshot) -> ActionRecord:
    """An action as the events loop decides it under ``snapshot``, for a new order."""
    outcome = process_event(
        Profile(id="ada"),
        track("Order Completed", "ada"),
        CompiledConfig.compile(snapshot),
        datetime.now(UTC),
        partition=0,
        offset=0,
        dedupe_window=20,
    )
    [action] = outcome.effects.actions
    return action


async def test_webhook_credentials_stay_out_of_action_records(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    read_topic: Reader,
) -> None:
    url = receiver.script("sealed", [Reply()])
    v1 = _thank_you(url, "first-token")
    config = ActiveConfig()
    config.update(v1)
    first = _decided(v1)
    # Neither the signing secret nor the header value is in what goes to Kafka (and from
    # there to retry schedules and dead letters); the record names what it leaves out.
    raw = first.to_json()
    assert SECRET.encode() not in raw and b"first-token" not in raw
    assert first.spec == {"channel": "webhook", "url": url, "sealed": ["secret", "headers"]}

    topics = Topics(dispatch_settings.namespace)
    dlq = await read_topic(topics.dlq)
    history = await read_topic(topics.history)
    # No global secret: only the rule's own secret can sign what the receiver verifies.
    await start_dispatcher(config=config, webhook_secret=None)
    await publish(producer, dispatch_settings, first)
    await eventually(lambda: _count(receiver, "sealed"), lambda n: n >= 1, what="delivery")
    [delivery] = receiver.at("sealed")
    assert delivery.verified
    assert delivery.headers["authorization"] == "Bearer first-token"

    # A token rotated after the decision: the action goes with the one in force.
    second = _decided(v1)
    config.update(_thank_you(url, "second-token"))
    await publish(producer, dispatch_settings, second)
    await eventually(lambda: _count(receiver, "sealed"), lambda n: n >= 2, what="delivery")
    assert receiver.at("sealed")[1].headers["authorization"] == "Bearer second-token"
    assert receiver.at("sealed")[1].verified

    # Decided under version 2 while this dispatcher still has version 1 (each process
    # follows the configuration on its own): retried, and sent once it has caught up.
    v2 = _thank_you(url, "third-token", version=2)
    third = _decided(v2)
    await publish(producer, dispatch_settings, third)
    await history.wait_for(
        lambda h: any(r["status"] == "retrying" for r in action_records(h, third.action_id)),
        "a retry",
    )
    config.update(v2)
    await eventually(lambda: _count(receiver, "sealed"), lambda n: n >= 3, what="delivery")
    assert receiver.at("sealed")[2].headers["authorization"] == "Bearer third-token"

    # The rule's url changed since the decision: its credentials are for the new url only.
    moved = _decided(v2)
    config.update(_thank_you(receiver.script("moved", [Reply()]), "fourth-token", version=3))
    await publish(producer, dispatch_settings, moved)
    [letter] = await dlq.wait_for(lambda d: len(d) >= 1, "a dead letter")
    assert letter["original"]["action_id"] == moved.action_id
    assert letter["attempts"] == 1
    assert "now has another webhook target" in letter["error"]

    # The rule is disabled before its action goes: after the retries, it fails, and its
    # dead letter has no credential either.
    gone = _decided(_thank_you(receiver.script("moved", [Reply()]), "x", version=3))
    config.update(ConfigSnapshot(version=4, bundle=Bundle()))
    await publish(producer, dispatch_settings, gone)
    letters = await dlq.wait_for(lambda d: len(d) >= 2, "a second dead letter")
    assert letters[1]["original"]["action_id"] == gone.action_id
    assert "is not in this dispatcher's configuration" in letters[1]["error"]
    assert "secret and headers" in letters[1]["error"]
    dumped = orjson.dumps(letters)
    assert b"-token" not in dumped and SECRET.encode() not in dumped
    assert len(receiver.at("sealed")) == 3 and receiver.at("moved") == []


async def test_a_short_installation_secret_is_reported_and_still_signs(
    dispatch_settings: Settings,
    receiver: WebhookReceiver,
    start_dispatcher: StartDispatcher,
    producer: AIOKafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    short = "whsec_" + base64.b64encode(b"k" * 8).decode()
    await start_dispatcher(webhook_secret=SecretStr(short))
    [warning] = [r for r in caplog.records if "SAFAR_WEBHOOK_SECRET" in r.getMessage()]
    assert "at least 16 bytes" in warning.getMessage() and short not in warning.getMessage()
    # Installations keep delivering until they rotate it.
    action = make_action({"channel": "webhook", "url": receiver.script("short", [Reply()])})
    await publish(producer, dispatch_settings, action)
    await eventually(lambda: _count(receiver, "short"), lambda n: n >= 1, what="delivery")
    delivery = receiver.at("short")[0]
    Webhook(short).verify(delivery.body, delivery.headers)  # signed with it
