"""Every route, CORS, batches with bad items, identity, limits and keys — over real HTTP,
with a real api publishing write keys and every accepted event read back from Kafka."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from services.ingest.segment import MAX_EVENT_BYTES
from shared.settings import Settings
from tests.conftest import Credentials
from tests.ingest.conftest import Tracking, publish_write_keys
from tests.ingest.events_topic import by_message_id, events_on_topic
from tests.stack import ServiceProcess, eventually, metric_value

pytestmark = pytest.mark.timeout(60)

SUCCESS = b'{"success":true}'
SINGLE: dict[str, dict[str, Any]] = {
    "track": {"userId": "u-track", "event": "Product Viewed", "properties": {"sku": "A1"}},
    "identify": {"userId": "u-identify", "traits": {"plan": "pro"}},
    "page": {"anonymousId": "a-page", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "u-screen", "name": "Cart"},
    "group": {"userId": "u-group", "groupId": "acme", "traits": {"size": 10}},
    "alias": {"userId": "u-alias", "previousId": "a-alias"},
}
SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a documented error: the status, and a JSON body of exactly code and message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and isinstance(body["message"], str), body
    assert body["code"] == code, body
    return body


async def test_every_route_accepts_its_messages_and_kafka_has_each_once(
    tracking: Tracking,
) -> None:
    sent: dict[str, str] = {}  # messageId -> type
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        for kind, message in SINGLE.items():
            sent[f"long-{kind}"] = kind
            response = await client.post(
                f"/v1/{kind}", json={**message, "messageId": f"long-{kind}"}, auth=tracking.auth
            )
            assert response.status_code == 200 and response.content == SUCCESS
            assert response.headers["content-type"] == "application/json"
        # The browser SDK: one-letter paths, text/plain, the write key in the body.
        for path, kind in SHORT.items():
            sent[f"short-{kind}"] = kind
            body = {**SINGLE[kind], "messageId": f"short-{kind}", "writeKey": tracking.auth[0]}
            response = await client.post(
                f"/v1/{path}",
                content=orjson.dumps(body),
                headers={"Content-Type": "text/plain", "Origin": "https://shop.example"},
            )
            assert response.status_code == 200 and response.content == SUCCESS
            assert response.headers["access-control-allow-origin"] == "*"
        for path in ("batch", "b", "import"):
            items = [
                {**message, "type": kind, "messageId": f"{path}-{kind}"}
                for kind, message in SINGLE.items()
            ]
            sent.update({item["messageId"]: item["type"] for item in items})
            response = await client.post(f"/v1/{path}", json={"batch": items}, auth=tracking.auth)
            assert response.status_code == 200 and response.content == SUCCESS
        metrics = (await client.get("/metrics")).text

    records = by_message_id(await events_on_topic(tracking.settings))
    assert {m: r.event.type for m, r in records.items()} == sent
    for record in records.values():
        event = record.event
        assert record.key == event.customer_id.encode()
        assert event.customer_id == (event.user_id or event.anonymous_id)
    track = records["b-track"].event
    assert (track.name, track.properties, track.user_id) == (
        "Product Viewed",
        {"sku": "A1"},
        "u-track",
    )
    assert records["short-identify"].event.traits == {"plan": "pro"}
    assert records["import-page"].event.name == "Home"
    assert records["batch-group"].event.group_id == "acme"
    assert records["long-alias"].event.previous_id == "a-alias"
    assert metric_value(metrics, "safar_ingest_events_total", outcome="accepted") == len(sent)


async def test_cors_preflight_answers_any_options_with_the_allowed_headers(
    tracking: Tracking,
) -> None:
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        for path in ("/v1/t", "/v1/batch", "/v1/track"):
            preflight = await client.options(
                path,
                headers={
                    "Origin": "https://shop.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, x-custom",
                },
            )
            assert preflight.status_code == 204, preflight.text
            assert preflight.headers["access-control-allow-origin"] == "*"
            assert "POST" in preflight.headers["access-control-allow-methods"]
            allowed = {
                h.strip().lower()
                for h in preflight.headers["access-control-allow-headers"].split(",")
            }
            assert allowed == {"authorization", "content-type", "x-retry-count", "anonymousid"}
            assert int(preflight.headers["access-control-max-age"]) > 0
        bare = await client.options("/v1/p")
        assert bare.status_code == 204
        # Errors are readable cross-origin too, so the browser SDK can see why.
        refused = await client.post(
            "/v1/t", content=b"{}", headers={"Origin": "https://shop.example"}
        )
        _error(refused, 401, "unauthorized")
        assert refused.headers["access-control-allow-origin"] == "*"
        assert refused.headers["access-control-expose-headers"] == "Retry-After"


async def test_invalid_batch_items_are_dropped_counted_and_logged_the_rest_kept(
    tracking: Tracking,
) -> None:
    oversize = {
        "type": "track",
        "userId": "u",
        "event": "Big",
        "messageId": "too-big",
        "properties": {"blob": "x" * MAX_EVENT_BYTES},
    }
    invalid: list[Any] = [
        {"type": "track", "event": "No ids", "messageId": "no-ids"},
        {"type": "track", "userId": None, "anonymousId": None, "event": "Null ids"},
        {"type": "track", "userId": "u"},
        {"type": "purchase", "userId": "u"},
        {"userId": "u", "event": "No type"},
        {"type": "group", "userId": "u"},
        {"type": "alias", "userId": "u"},
        {"type": "track", "userId": {"id": 1}, "event": "E"},
        {"type": "track", "userId": "u", "event": "E", "properties": ["a"]},
        {"type": "identify", "userId": "u", "timestamp": "last tuesday"},
        "not an object",
        oversize,
    ]
    valid = [
        {"type": "track", "userId": "u", "event": "Kept", "messageId": "kept-1"},
        {"type": "identify", "anonymousId": "a", "messageId": "kept-2"},
    ]
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        mixed = await client.post(
            "/v1/batch", json={"batch": [*invalid[:6], *valid, *invalid[6:]]}, auth=tracking.auth
        )
        assert mixed.status_code == 200 and mixed.content == SUCCESS
        # A batch with nothing valid in it is still a valid batch.
        nothing = await client.post("/v1/batch", json={"batch": invalid}, auth=tracking.auth)
        assert nothing.status_code == 200 and nothing.content == SUCCESS
        empty = await client.post("/v1/b", json={"batch": []}, auth=tracking.auth)
        assert empty.status_code == 200 and empty.content == SUCCESS
        metrics = (await client.get("/metrics")).text

    records = by_message_id(await events_on_topic(tracking.settings))
    assert set(records) == {"kept-1", "kept-2"}
    assert metric_value(metrics, "safar_ingest_events_total", outcome="rejected") == 2 * len(
        invalid
    )
    assert metric_value(metrics, "safar_ingest_events_total", outcome="accepted") == 2
    assert metric_value(metrics, "safar_ingest_events_total", type="unknown") == 2 * 3
    log = tracking.ingest.log_path.read_text()
    # One line per batch, naming the first item dropped.
    assert "dropped 12 of 14 batch items; the first, item 0 (messageId 'no-ids')" in log
    assert "dropped 12 of 12 batch items" in log and "userId or anonymousId is required" in log


async def test_a_batch_over_one_kafka_record_batch_is_stored_whole_and_in_order(
    tracking: Tracking,
) -> None:
    # ~450 KB for one customer: its partition's record batch (256 KB) fills and is split.
    items = [
        {
            "type": "track",
            "userId": "u-big",
            "event": "Big",
            "messageId": f"big-{i}",
            "properties": {"blob": "x" * 2000},
        }
        for i in range(200)
    ]
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        response = await client.post("/v1/batch", json={"batch": items}, auth=tracking.auth)
    assert response.status_code == 200 and response.content == SUCCESS

    records = await events_on_topic(tracking.settings)
    assert [r.event.message_id for r in records] == [item["messageId"] for item in items]


async def test_bad_requests_get_documented_errors_and_reach_nothing(tracking: Tracking) -> None:
    auth = tracking.auth
    track = {"userId": "u", "event": "E"}
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        _error(await client.post("/v1/track", content=b"{not json", auth=auth), 400, "invalid_json")
        _error(await client.post("/v1/track", content=b"[1,2]", auth=auth), 400, "invalid_json")
        _error(await client.post("/v1/track", content=b"", auth=auth), 400, "invalid_json")
        bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
        _error(
            await client.post(
                "/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"}, auth=auth
            ),
            400,
            "payload_too_large",
        )
        _error(
            await client.post(
                "/v1/t", content=b"\x1f\x8bnope", headers={"Content-Encoding": "gzip"}, auth=auth
            ),
            400,
            "invalid_encoding",
        )
        _error(
            await client.post(
                "/v1/t", content=orjson.dumps(track), headers={"Content-Encoding": "br"}, auth=auth
            ),
            400,
            "unsupported_encoding",
        )
        huge_batch = {"batch": [{**track, "type": "track", "properties": {"p": "x" * 1024}}] * 600}
        _error(await client.post("/v1/batch", json=huge_batch, auth=auth), 400, "payload_too_large")
        many = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}
        assert len(orjson.dumps(many)) < 500 * 1024
        _error(await client.post("/v1/batch", json=many, auth=auth), 400, "batch_too_large")
        _error(await client.post("/v1/import", json={"batch": {}}, auth=auth), 400, "invalid_batch")
        _error(await client.post("/v1/batch", json=track, auth=auth), 400, "invalid_batch")
        big = {**track, "properties": {"p": "x" * MAX_EVENT_BYTES}}
        _error(await client.post("/v1/track", json=big, auth=auth), 400, "event_too_large")
        for kind, message in [
            ("track", {"event": "E"}),
            ("track", {"userId": None, "event": "E"}),
            ("track", {"userId": "u"}),
            ("track", {"userId": "u", "event": "E", "properties": "x"}),
            ("track", {"userId": ["u"], "event": "E"}),
            ("identify", {"userId": "u", "traits": [1]}),
            ("group", {"userId": "u"}),
            ("alias", {"previousId": "p"}),
            ("page", {"userId": "u", "sentAt": 5, "timestamp": "2026-01-01T00:00:00Z"}),
        ]:
            _error(await client.post(f"/v1/{kind}", json=message, auth=auth), 400, "invalid_event")
        # Write keys: missing, unknown, malformed; in the header or the body.
        _error(await client.post("/v1/track", json=track), 401, "unauthorized")
        _error(
            await client.post("/v1/track", json=track, auth=("wk_nope", "")), 401, "unauthorized"
        )
        _error(
            await client.post("/v1/track", json={**track, "writeKey": "wk_nope"}),
            401,
            "unauthorized",
        )
        _error(
            await client.post("/v1/track", json=track, headers={"Authorization": "Basic %%%"}),
            401,
            "unauthorized",
        )
        _error(
            await client.post("/v1/track", json={**track, "writeKey": 12345}), 401, "unauthorized"
        )
        _error(await client.get("/v1/track"), 405, "method_not_allowed")
        _error(await client.post("/v1/purchase", json=track, auth=auth), 404, "not_found")
    assert await events_on_topic(tracking.settings) == []


async def test_gzip_text_plain_and_skewed_clocks(tracking: Tracking) -> None:
    before = datetime.now(UTC)
    fast_clock = before + timedelta(hours=3)  # the sender's clock is three hours ahead
    body = {
        "batch": [
            {
                "type": "track",
                "userId": "skewed",
                "event": "Order Completed",
                "timestamp": (fast_clock - timedelta(seconds=30)).isoformat(),
                "messageId": "m-skewed",
            },
            {"type": "track", "userId": "plain", "event": "Order Completed", "messageId": "m-now"},
        ],
        "sentAt": fast_clock.isoformat(),
        "context": {"library": {"name": "test"}},
    }
    async with httpx.AsyncClient(base_url=tracking.ingest.url) as client:
        response = await client.post(
            "/v1/batch",
            content=gzip.compress(orjson.dumps(body)),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
            auth=tracking.auth,
        )
        assert response.status_code == 200 and response.content == SUCCESS
    after = datetime.now(UTC)
    records = by_message_id(await events_on_topic(tracking.settings))

    def at(value: str) -> datetime:
        return datetime.fromisoformat(value)

    skewed = records["m-skewed"].event
    assert before <= at(skewed.received_at) <= after
    # receivedAt - (sentAt - timestamp): 30 s before arrival, whatever the sender's clock.
    assert at(skewed.timestamp) == at(skewed.received_at) - timedelta(seconds=30)
    assert skewed.context == {"library": {"name": "test"}}
    now = records["m-now"].event
    assert now.timestamp == now.received_at


async def test_identify_and_alias_link_anonymous_ids_to_the_user(tracking: Tracking) -> None:
    async with httpx.AsyncClient(base_url=tracking.ingest.url, auth=tracking.auth) as client:

        async def send(path: str, message: dict[str, Any]) -> None:
            response = await client.post(path, json=message)
            assert response.status_code == 200, response.text

        await send(
            "/v1/track", {"anonymousId": "anon-1", "event": "Product Viewed", "messageId": "m1"}
        )
        await send("/v1/identify", {"anonymousId": "anon-1", "userId": "ada", "messageId": "m2"})
        await send(
            "/v1/track", {"anonymousId": "anon-1", "event": "Product Added", "messageId": "m3"}
        )
        await send("/v1/alias", {"previousId": "anon-2", "userId": "ada", "messageId": "m4"})
        await send(
            "/v1/batch",
            {
                "batch": [
                    {"type": "page", "anonymousId": "anon-2", "name": "Cart", "messageId": "m5"}
                ]
            },
        )
        await send("/v1/track", {"anonymousId": "anon-3", "event": "Unlinked", "messageId": "m6"})

    records = by_message_id(await events_on_topic(tracking.settings))
    before_link = records["m1"].event
    assert (before_link.customer_id, before_link.user_id) == ("anon-1", None)
    for message_id, anonymous_id in (("m3", "anon-1"), ("m5", "anon-2")):
        linked = records[message_id]
        assert linked.key == b"ada"
        assert (linked.event.customer_id, linked.event.user_id) == ("ada", "ada")
        assert linked.event.anonymous_id == anonymous_id
    assert records["m6"].key == b"anon-3" and records["m6"].event.user_id is None


async def test_rate_limit_per_write_key_answers_429_with_retry_after(
    settings: Settings, service: Callable[..., ServiceProcess]
) -> None:
    await publish_write_keys(settings, "wk_slow", "wk_other")
    slow = settings.model_copy(update={"ingest_rate_per_key": 0.01, "ingest_rate_burst": 3})
    ingest = await service("ingest", settings_=slow).start()
    message = {"userId": "u", "event": "E"}
    async with httpx.AsyncClient(base_url=ingest.url, auth=("wk_slow", "")) as client:
        # Invalid items count too (they cost the parsing): two valid, one without an event.
        items = [{**message, "type": "track"}] * 2 + [{"type": "track", "userId": "u"}]
        burst = await client.post("/v1/batch", json={"batch": items})
        assert burst.status_code == 200, burst.text
        limited = await client.post("/v1/track", json=message)
        _error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # The bucket is the key's own: another source still sends.
        other = await client.post("/v1/track", json=message, auth=("wk_other", ""))
        assert other.status_code == 200, other.text
        metrics = (await client.get("/metrics")).text
    assert metric_value(metrics, "safar_ingest_events_total", outcome="rate_limited") == 1
    assert len(await events_on_topic(settings)) == 3


async def test_sources_issue_list_and_revoke_write_keys_that_ingest_follows(
    settings: Settings, credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    ingest = await service("ingest").start()  # ready: it has the api's snapshot
    admin = {"Authorization": f"Bearer {credentials.admin_key}"}
    message = {"userId": "u", "event": "E"}
    async with httpx.AsyncClient() as client:
        refused = await client.post(f"{api.url}/v1/sources", json={"name": "web"})
        assert refused.status_code == 401
        created = await client.post(f"{api.url}/v1/sources", json={"name": "web"}, headers=admin)
        assert created.status_code == 201, created.text
        source = created.json()
        key = source["write_key"]
        listed = await client.get(f"{api.url}/v1/sources", headers=admin)
        assert listed.status_code == 200
        assert source["id"] in {s["id"] for s in listed.json()}
        assert key not in listed.text  # shown once only

        async def status_with(write_key: str) -> int:
            response = await client.post(
                f"{ingest.url}/v1/track", json=message, auth=(write_key, "")
            )
            return response.status_code

        assert await status_with(credentials.write_key) == 200
        await eventually(lambda: status_with(key), lambda s: s == 200, what="new key")
        revoked = await client.delete(f"{api.url}/v1/sources/{source['id']}", headers=admin)
        assert revoked.status_code == 204
        await eventually(lambda: status_with(key), lambda s: s == 401, what="revoked")
        assert await status_with(credentials.write_key) == 200
