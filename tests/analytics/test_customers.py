"""Rule statistics, the actions list, the timeline and erasure, through the api process."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.api.customers.service import erase_redis
from shared.customer_keys import CustomerKeys
from shared.dispatch_keys import DispatchKeys
from shared.kafka import make_producer
from shared.profile import Profile
from shared.settings import Settings
from tests.analytics import history_records as h
from tests.analytics.kafka_history import produce_history
from tests.conftest import Credentials
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def nudge_history() -> list[bytes]:
    """Rule ``nudge`` over 100 customers n00..n99, with known outcomes."""
    records: list[bytes] = []
    for i in range(100):
        c = f"n{i:02d}"
        act = f"act_{c}"
        records.append(h.rule(c, "nudge", "triggered", minutes=1))
        if i < 80:
            records.append(h.rule(c, "nudge", "scheduled", minutes=1.5))
        if 60 <= i < 80:
            records.append(h.rule(c, "nudge", "cancelled", minutes=10))
        if i < 45:
            records.append(h.rule(c, "nudge", "fired", action_id=act, minutes=31))
        if 80 <= i < 85:
            records.append(h.rule(c, "nudge", "suppressed", minutes=1))
        if 85 <= i < 95:
            records.append(h.rule(c, "nudge", "held_out", action_id=act, minutes=31))
        if 95 <= i < 97:
            records.append(h.rule(c, "nudge", "error", minutes=1))
        if i < 5:  # delivered on the second attempt
            records.append(h.action(c, "nudge", act, "retrying", 1, status_code=503, minutes=31.1))
            records.append(h.action(c, "nudge", act, "sent", 2, status_code=200, minutes=32))
        elif i < 35:
            records.append(h.action(c, "nudge", act, "sent", 1, status_code=200, minutes=31.1))
        elif i < 40:  # gave up after three attempts
            for attempt in (1, 2):
                records.append(
                    h.action(
                        c, "nudge", act, "retrying", attempt, status_code=500, minutes=31 + attempt
                    )
                )
            records.append(h.action(c, "nudge", act, "failed", 3, error="500 x3", minutes=34))
        elif i < 45:
            records.append(h.action(c, "nudge", act, "retrying", 1, status_code=429, minutes=31.1))
        if i < 18 or i in (85, 86):
            group = "treated" if i < 18 else "holdout"
            records.append(h.conversion(c, "nudge", act, group, minutes=60))
    # Another rule's history must not leak into nudge's numbers.
    records += [
        h.rule("n00", "other", "triggered", minutes=2),
        h.rule("n00", "other", "fired", action_id="act_other", minutes=2),
        h.action("n00", "other", "act_other", "sent", 1, minutes=2.5),
        h.conversion("n00", "other", "act_other", "treated", minutes=3),
    ]
    return records


async def test_rule_stats_actions_and_timeline_from_recorded_history(
    settings: Settings,
    credentials: Credentials,
    service: Callable[..., ServiceProcess],
    producer: AIOKafkaProducer,
) -> None:
    api = await service("api").start()
    records = nudge_history()
    records += [
        h.event("n00", "Product Added", minutes=0, properties={"cart_id": "c9", "price": 25}),
        h.transition(
            "n00", "decision", move="enter", minutes=0, event_id="msg-n00-Product Added-0"
        ),
    ]
    # Every record twice: what a replay or a producer retry delivers.
    await produce_history(producer, settings, records + records)
    headers = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as client:

        async def consumed() -> float:
            text = (await client.get("/metrics")).text
            return metric_value(text, "safar_recorder_records_total")

        await eventually(consumed, lambda n: n >= 2 * len(records), what="history recorded")
        stats = (await client.get("/v1/rules/nudge/stats")).json()
        assert {k: v for k, v in stats.items() if k not in ("since", "until")} == {
            "rule": "nudge",
            "triggered": 100,
            "scheduled": 80,
            "cancelled": 20,
            "suppressed": 5,
            "held_out": 10,
            "fired": 45,
            "errors": 2,
            "sent": 35,
            "failed": 5,
            "retrying": 5,
            "treated": {"customers": 45, "conversions": 18, "conversion_rate": 0.4},
            "holdout": {"customers": 10, "conversions": 2, "conversion_rate": 0.2},
            "uplift": pytest.approx(0.2),
            "relative_uplift": pytest.approx(1.0),
        }
        unknown = (await client.get("/v1/rules/never-ran/stats")).json()
        assert (unknown["triggered"], unknown["uplift"]) == (0, None)
        early = await client.get("/v1/rules/nudge/stats", params={"until": h.at(30)})
        assert (early.json()["triggered"], early.json()["fired"]) == (100, 0)

        async def actions(**params: str) -> list[dict[str, Any]]:
            response = await client.get("/v1/actions", params=params)
            assert response.status_code == 200, response.text
            return list(response.json())

        assert len(await actions(rule="nudge", status="sent")) == 35
        failed = await actions(rule="nudge", status="failed")
        assert sorted(a["customer_id"] for a in failed) == [f"n{i}" for i in range(35, 40)]
        assert {(a["attempts"], a["error"], a["channel"]) for a in failed} == {
            (3, "500 x3", "webhook")
        }
        assert len(await actions(rule="nudge", status="held_out")) == 10
        # 45 fired and 10 held out: 55 actions, paged.
        assert len(await actions(rule="nudge", limit="7", offset="40")) == 7
        assert len(await actions(rule="nudge", limit="7", offset="50")) == 5
        mine = await actions(customer_id="n00")
        assert sorted((a["action_id"], a["rule"], a["status"], a["attempts"]) for a in mine) == [
            ("act_n00", "nudge", "sent", 2),
            ("act_other", "other", "sent", 1),
        ]
        bad = await client.get("/v1/actions", params={"status": "lost"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid"

        timeline = (await client.get("/v1/customers/n00/timeline")).json()
        assert timeline["truncated"] is False
        assert [
            (i["kind"], i.get("outcome") or i.get("status") or i.get("to_stage") or i.get("name"))
            for i in timeline["items"]
        ] == [
            ("event", "Product Added"),
            ("transition", "decision"),
            ("rule", "triggered"),
            ("rule", "scheduled"),
            ("rule", "triggered"),
            ("rule", "fired"),
            ("action", "sent"),
            ("conversion", None),
            ("rule", "fired"),
            ("action", "retrying"),
            ("action", "sent"),
            ("conversion", None),
        ]
        assert timeline["items"][0]["event"]["properties"] == {"cart_id": "c9", "price": 25}
        first = (await client.get("/v1/customers/n00/timeline", params={"limit": 3})).json()
        assert first["truncated"] is True and len(first["items"]) == 3
        assert (await client.get("/v1/customers/nobody/timeline")).json()["items"] == []

        for path, code, status in (
            ("/v1/journeys/nope/funnel", "not_found", 404),
            ("/v1/journeys/nope/paths", "not_found", 404),
            (
                "/v1/journeys/purchase/funnel?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
                "invalid",
                422,
            ),
            ("/v1/journeys/purchase/funnel?since=yesterday", "invalid", 422),
        ):
            response = await client.get(path)
            assert (response.status_code, response.json()["code"]) == (status, code), path
        anonymous = await client.get("/v1/rules/nudge/stats", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        # Requests are timed by route template: no customer id in any label.
        exposed = (await client.get("/metrics")).text
        timed = metric_value(
            exposed,
            "safar_api_request_duration_seconds_count",
            route="/v1/customers/{customer_id:path}/timeline",
            method="GET",
            status="200",
        )
        assert timed == 3
        assert "n00" not in exposed and "nobody" not in exposed


async def _leftovers_in_postgres(settings: Settings, *needles: str) -> dict[str, int]:
    """Rows of any table whose text mentions one of ``needles``."""
    connection = await asyncpg.connect(
        settings.require("database_url").replace("postgresql+asyncpg", "postgresql")
    )
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        found: dict[str, int] = {}
        for (table,) in tables:
            for needle in needles:
                count = await connection.fetchval(
                    f'SELECT count(*) FROM "{table}" AS t WHERE t::text LIKE $1', f"%{needle}%"
                )
                if count:
                    found[f"{table}:{needle}"] = count
        return found
    finally:
        await connection.close()


async def _leftovers_in_redis(settings: Settings, *needles: str) -> list[str]:
    """Keys of the namespace that name one of ``needles``, hold one as a string value, or
    name one in a sorted-set member (the timer index)."""
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        prefix = CustomerKeys(settings.namespace).prefix
        found = []
        async for raw in redis.scan_iter(match=f"{prefix}:*", count=1000):
            key = raw.decode()
            kind = await redis.type(key)
            value = await redis.get(key) if kind == b"string" else b""
            members = await redis.zrange(key, 0, -1) if kind == b"zset" else []
            if any(
                n in key or n.encode() == value or any(n.encode() in m for m in members)
                for n in needles
            ):
                found.append(key)
        return found
    finally:
        await redis.aclose()


async def test_erasure_leaves_no_trace_and_a_later_event_starts_afresh(
    settings: Settings,
    credentials: Credentials,
    service: Callable[..., ServiceProcess],
    producer: AIOKafkaProducer,
) -> None:
    api = await service("api").start()
    who, anonymous, bystander = "erase-me-7f3a", "anon-7f3a", "keep-me-7f3a"
    auth = (credentials.write_key, "")
    headers = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as client:
        # A pending wait puts the customer in the timer index too. The rule exists before the
        # orchestrator starts (it is ready once it has the latest configuration), so no event
        # is processed under the configuration without it.
        nudge = {
            "key": "nudge",
            "trigger": {"event": "Product Added"},
            "wait": {"for": "1h"},
            "action": {"channel": "log", "message": "nudge"},
        }
        created = await client.post("/v1/rules", json=nudge)
        assert created.status_code == 201, created.text
        await service("orchestrator").start()
        ingest = await service("ingest").start()
        # Browsing anonymously, then identified: ingest links the anonymous id to the user.
        response = await client.post(
            f"{ingest.url}/v1/track",
            json={"anonymousId": anonymous, "event": "Product Viewed"},
            auth=auth,
        )
        assert response.status_code == 200, response.text
        await eventually(
            lambda: client.get(f"/v1/customers/{anonymous}"),
            lambda r: r.status_code == 200,
            what="the anonymous profile",
        )
        batch = [
            {"type": "identify", "anonymousId": anonymous, "userId": who, "traits": {"e": 1}},
            {"type": "track", "anonymousId": anonymous, "event": "Product Added"},
            {"type": "track", "userId": bystander, "event": "Product Viewed"},
        ]
        response = await client.post(f"{ingest.url}/v1/batch", json={"batch": batch}, auth=auth)
        assert response.status_code == 200, response.text
        # A rule that fired, was delivered and converted, recorded directly.
        await produce_history(
            producer,
            settings,
            [
                h.event(who, "Product Added", anonymous_id=anonymous),
                h.rule(who, "nudge", "fired", action_id="act_erase"),
                h.action(who, "nudge", "act_erase", "sent", 1),
                h.conversion(who, "nudge", "act_erase", "treated"),
                h.rule(bystander, "nudge", "triggered"),
            ],
        )

        async def stored() -> dict[str, int]:
            return await _leftovers_in_postgres(settings, who, anonymous, bystander)

        def complete(found: dict[str, int]) -> bool:
            return (
                found.get(f"history_transitions:{who}", 0) >= 1
                and found.get(f"history_transitions:{anonymous}", 0) >= 1
                and found.get(f"history_conversions:{who}", 0) == 1
                and found.get(f"history_transitions:{bystander}", 0) == 1
                and found.get(f"history_rule_outcomes:{bystander}", 0) >= 1
            )

        await eventually(stored, complete, timeout=30, what="history recorded")
        await eventually(
            lambda: client.get(f"/v1/customers/{who}"),
            lambda r: r.status_code == 200 and len(r.json()["waits"]) == 1,
            what="the wait pending",
        )
        assert any(":timers:" in key for key in await _leftovers_in_redis(settings, who, anonymous))

        erased = await client.delete(f"/v1/customers/{who}")
        assert erased.status_code == 200, erased.text
        receipt = erased.json()
        assert receipt["linked_ids"] == [anonymous]
        assert receipt["redis_keys"] == 2  # the profile, the anonymous id's identity link
        assert receipt["rows"]["history_conversions"] == 1

        assert await _leftovers_in_redis(settings, who, anonymous) == []
        left = await _leftovers_in_postgres(settings, who, anonymous, bystander)
        assert set(left) == {
            f"history_events:{bystander}",
            f"history_transitions:{bystander}",
            f"history_customer_stages:{bystander}",
            f"history_rule_outcomes:{bystander}",
        }
        assert (await client.get(f"/v1/customers/{who}")).status_code == 404
        assert (await client.get(f"/v1/customers/{bystander}")).status_code == 200
        again = await client.delete(f"/v1/customers/{who}")
        assert again.status_code == 200
        assert again.json()["redis_keys"] == 0 and sum(again.json()["rows"].values()) == 0
        forbidden = await client.delete(
            f"/v1/customers/{who}", headers={"Authorization": "Bearer sk_nobody"}
        )
        assert (forbidden.status_code, forbidden.json()["code"]) == (401, "unauthorized")

        # A later event starts a fresh profile, and its history is recorded again.
        response = await client.post(
            f"{ingest.url}/v1/track", json={"userId": who, "event": "Ad Clicked"}, auth=auth
        )
        assert response.status_code == 200

        async def profile() -> dict[str, Any] | None:
            found = await client.get(f"/v1/customers/{who}")
            return dict(found.json()) if found.status_code == 200 else None

        fresh = await eventually(profile, lambda p: p is not None, what="a fresh profile")
        assert fresh is not None
        assert fresh["counts"] == {"Ad Clicked": 1}
        assert fresh["traits"] == {}
        assert fresh["stages"]["purchase"]["stage"] == "awareness"

        async def timeline() -> list[dict[str, Any]]:
            return list((await client.get(f"/v1/customers/{who}/timeline")).json()["items"])

        items = await eventually(timeline, lambda i: len(i) >= 2, what="the new move recorded")
        assert sorted(i["kind"] for i in items) == ["event", "transition"]
        [move] = [i for i in items if i["kind"] == "transition"]
        assert (move["to_stage"], move["move"]) == ("awareness", "enter")

        # Both erasures are in the audit log, under a digest of the id, never the id itself.
        reference = "sha256:" + hashlib.sha256(who.encode()).hexdigest()
        audited = await client.get("/v1/audit", params={"target_kind": "customer"})
        assert audited.status_code == 200, audited.text
        entries = [e for e in audited.json() if e["target_key"] == reference]
        assert [(e["action"], e["actor"]) for e in entries] == [
            ("erase", "development admin"),
            ("erase", "development admin"),
        ]
        # Newest first: the repeat erased nothing, the first erasure what its receipt said.
        assert entries[0]["after"] == {"linked_ids": 0, "redis_keys": 0, "rows": 0}
        assert entries[1]["after"] == {
            "linked_ids": 1,
            "redis_keys": receipt["redis_keys"],
            "rows": sum(receipt["rows"].values()),
        }
        assert who not in audited.text
    log = api.log_path.read_text()
    reference = "sha256:" + hashlib.sha256(who.encode()).hexdigest()
    assert f"customer erased: {reference} by development admin" in log
    assert who not in log


async def test_erasure_deletes_the_customers_keys_by_name_and_nothing_that_looks_alike(
    settings: Settings,
) -> None:
    """A customer named like a dispatcher key tag ("retries", an action id) takes only their
    own keys: the retry schedule and recorded outcomes stay."""
    keys = CustomerKeys(settings.namespace)
    dispatch = DispatchKeys(settings.namespace)
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        others = [dispatch.retry_due, dispatch.retry_actions, dispatch.outcome("act-1")]
        await redis.zadd(dispatch.retry_due, {"x": 1})
        await redis.hset(dispatch.retry_actions, "x", orjson.dumps({"customer_id": "bob"}))
        await redis.set(dispatch.outcome("act-1"), "1")
        for customer in ("retries", "act-1"):
            await redis.hset(keys.profile(customer), mapping={"p": "{", "v": "1"})
            await redis.set(keys.identity(customer), "someone")
        # A retry of one of their actions is scheduled: it holds their profile, and goes.
        theirs = orjson.dumps({"action_id": "act-2", "customer_id": "act-1"})
        await redis.hset(dispatch.retry_actions, "act-2", theirs)
        await redis.zadd(dispatch.retry_due, {"act-2": 1})
        # Timer entries: theirs, even one whose wait their (unreadable) profile does not
        # show, go; those of customers whose ids a pattern would also match stay.
        timers: dict[str, list[str]] = {}
        # One that "act-?" as a plain pattern would match, in the same shard.
        shard_of = keys.timer_shard("act-?", 4)
        alike = next(
            f"act-{c}" for c in "abcdefghij" if keys.timer_shard(f"act-{c}", 4) == shard_of
        )
        for customer in ("retries", "act-1", "act-10", "act-?", alike, "act-["):
            for rule in ("nudge", "ask"):
                shard = keys.timer_shard(customer, 4)
                member = keys.timer_member(customer, rule, "cart-1")
                await redis.zadd(shard, {member: 1e12})
                timers.setdefault(shard, []).append(member)
        deleted = await erase_redis(
            redis=redis, keys=keys, customer_ids={"retries", "act-1", "act-?"}, timer_shards=4
        )
        assert deleted == 4
        left = {member.decode() for shard in timers for member in await redis.zrange(shard, 0, -1)}
        assert {CustomerKeys.parse_timer_member(m)[0] for m in left} == {"act-10", alike, "act-["}
        assert [bool(await redis.exists(key)) for key in others] == [True, True, True]
        assert await redis.hkeys(dispatch.retry_actions) == [b"x"]
        assert await redis.zscore(dispatch.retry_due, "act-2") is None
    finally:
        await redis.aclose()


async def test_a_customer_id_with_a_slash_is_read_and_erased(
    settings: Settings, credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    keys = CustomerKeys(settings.namespace)
    who = "tenant/42"
    redis = Redis.from_url(settings.require("redis_url"))
    try:
        await redis.hset(keys.profile(who), mapping={"p": Profile(id=who).to_json(), "v": "1"})
        headers = {"Authorization": f"Bearer {credentials.admin_key}"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as client:
            for path in ("/v1/customers/tenant/42", "/v1/customers/tenant%2F42"):
                found = await client.get(path)
                assert found.status_code == 200 and found.json()["id"] == who, path
            timeline = await client.get("/v1/customers/tenant/42/timeline")
            assert timeline.status_code == 200 and timeline.json()["customer_id"] == who
            erased = await client.delete("/v1/customers/tenant/42")
            assert erased.status_code == 200 and erased.json()["customer_id"] == who
            # A stored profile that does not read is reported as such.
            await redis.hset(keys.profile("broken"), mapping={"p": "{", "v": "1"})
            broken = await client.get("/v1/customers/broken")
            assert (broken.status_code, broken.json()["code"]) == (500, "unreadable_profile")
        assert not await redis.exists(keys.profile(who))
    finally:
        await redis.aclose()
