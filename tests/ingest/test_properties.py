"""Property-based: whatever the payload's shape, size, encoding or key, ingest answers with a
documented status and body — never a 500 — and exactly the valid events reach Kafka."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.request_body import MAX_REQUEST_BYTES
from services.ingest.segment import MAX_BATCH_EVENTS, MAX_EVENT_BYTES, InvalidMessage, normalize
from tests.ingest.conftest import Tracking
from tests.ingest.events_topic import events_on_topic

pytestmark = pytest.mark.timeout(120)

SINGLE_ROUTES = {
    **{f"/v1/{kind}": kind for kind in ("track", "identify", "page", "screen", "group", "alias")},
    **{
        f"/v1/{letter}": kind
        for letter, kind in zip(
            "tipsga", ("track", "identify", "page", "screen", "group", "alias"), strict=True
        )
    },
}
BATCH_ROUTES = ("/v1/batch", "/v1/b", "/v1/import")
TYPES = ("track", "identify", "page", "screen", "group", "alias")
ERROR_CODES = {
    400: {
        "invalid_json",
        "invalid_encoding",
        "unsupported_encoding",
        "payload_too_large",
        "invalid_batch",
        "batch_too_large",
        "invalid_event",
        "event_too_large",
    },
    401: {"unauthorized"},
}

# Hypothesis bounds datetimes with naive values and applies the drawn zone afterwards.
EARLIEST = datetime(1, 1, 2)  # noqa: DTZ001
LATEST = datetime(9999, 12, 30)  # noqa: DTZ001
leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_object = st.dictionaries(st.text(max_size=8), json_value, max_size=4)
an_id = st.none() | st.just("") | st.text(max_size=10) | st.integers() | json_value
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(timezone)
a_time = (
    st.none()
    | st.datetimes(
        min_value=EARLIEST, max_value=LATEST, timezones=st.one_of(st.none(), offsets)
    ).map(datetime.isoformat)
    | st.text(max_size=12)
    | st.integers()
)
any_message = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | json_value,
        "userId": an_id,
        "anonymousId": an_id,
        "messageId": an_id,
        "groupId": an_id,
        "previousId": an_id,
        "event": st.text(max_size=12) | json_value,
        "name": st.text(max_size=12) | json_value,
        "properties": json_object | json_value,
        "traits": json_object | json_value,
        "context": json_object | json_value,
        "integrations": json_object,
        "timestamp": a_time,
        "originalTimestamp": a_time,
        "sentAt": a_time,
    },
)
name = st.text(min_size=1, max_size=12).filter(str.strip)
recent = st.datetimes(
    min_value=EARLIEST.replace(year=2000),
    max_value=LATEST.replace(year=2100),
    timezones=st.just(UTC),
).map(datetime.isoformat)


@st.composite
def valid_message(draw: st.DrawFn) -> dict[str, Any]:
    """A message every SDK could send: must always be accepted."""
    kind = draw(st.sampled_from(TYPES))
    message: dict[str, Any] = {"type": kind, "userId": draw(name)}
    if draw(st.booleans()):
        message["anonymousId"] = draw(name)
    message |= {
        "track": {"event": draw(name)},
        "group": {"groupId": draw(name)},
        "alias": {"previousId": draw(name)},
    }.get(kind, {})
    optional = st.fixed_dictionaries(
        {},
        optional={
            "properties": json_object,
            "traits": json_object,
            "context": json_object,
            "messageId": name,
            "timestamp": recent,
            "sentAt": recent,
        },
    )
    return message | draw(optional)


@dataclass(frozen=True)
class Attempt:
    route: str
    body: Any  # a JSON value, or raw bytes
    encoding: str
    content_type: str
    auth: str
    padding: int


def _pad(body: Any, padding: int) -> Any:
    if padding and isinstance(body, dict):
        props = body.get("properties")
        return {
            **body,
            "properties": {**(props if isinstance(props, dict) else {}), "pad": "x" * padding},
        }
    return body


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    padding = draw(st.sampled_from([0, 0, 0, MAX_EVENT_BYTES + 10, MAX_REQUEST_BYTES + 10]))
    if draw(st.booleans()):
        route = draw(st.sampled_from(sorted(SINGLE_ROUTES)))
        body: Any = draw(valid_message() | any_message | json_value | st.binary(max_size=64))
        body = _pad(body, padding)
    else:
        route = draw(st.sampled_from(BATCH_ROUTES))
        items = draw(st.lists(valid_message() | any_message | json_value, max_size=6))
        if items and padding:
            items[0] = _pad(items[0], padding)
        body = draw(
            st.fixed_dictionaries(
                {"batch": st.just(items)},
                optional={"context": json_object | json_value, "sentAt": a_time},
            )
            | json_value
            | st.binary(max_size=64)
        )
    return Attempt(
        route=route,
        body=body,
        encoding=draw(st.sampled_from(["identity", "gzip", "gzip-truncated", "deflate", "br"])),
        content_type=draw(st.sampled_from(["application/json", "text/plain", "", "text/html"])),
        auth=draw(st.sampled_from(["basic", "body", "none", "wrong-basic", "wrong-body"])),
        padding=padding,
    )


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _request(attempt: Attempt, write_key: str) -> tuple[bytes, dict[str, str], bytes]:
    """The wire body, the headers, and the uncompressed JSON the body carries."""
    body = attempt.body
    if isinstance(body, dict) and attempt.auth in ("body", "wrong-body"):
        body = {**body, "writeKey": write_key if attempt.auth == "body" else "wk_wrong"}
    # The stdlib encoder, not ingest's: it also writes integers past 64 bits.
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": attempt.content_type} if attempt.content_type else {}
    if attempt.auth == "basic":
        headers["Authorization"] = _basic(write_key)
    elif attempt.auth == "wrong-basic":
        headers["Authorization"] = _basic("wk_wrong")
    wire = {
        "identity": lambda: raw,
        "gzip": lambda: gzip.compress(raw),
        "gzip-truncated": lambda: gzip.compress(raw)[:-6],
        "deflate": lambda: zlib.compress(raw),
        "br": lambda: raw,
    }[attempt.encoding]()
    if attempt.encoding != "identity":
        headers["Content-Encoding"] = attempt.encoding.removesuffix("-truncated")
    return wire, headers, raw


def _accepted_events(attempt: Attempt, raw: bytes) -> int:
    """How many events a 200 for this request put on Kafka, by the pure normalization."""
    payload = orjson.loads(raw)
    now = datetime.now(UTC)
    if attempt.route in SINGLE_ROUTES:
        return 1
    count = 0
    for item in payload["batch"]:
        try:
            normalize(item, type_hint=None, received_at=now, batch=payload)
            count += 1
        except InvalidMessage:
            pass
    return count


def _must_succeed(attempt: Attempt, raw: bytes) -> bool:
    """Requests that are fine by the contract whatever their items hold."""
    if attempt.auth not in ("basic", "body") or attempt.encoding in ("gzip-truncated", "br"):
        return False
    if not isinstance(attempt.body, dict) or len(raw) > MAX_REQUEST_BYTES:
        return False
    if attempt.route in BATCH_ROUTES:
        items = attempt.body.get("batch")
        return isinstance(items, list) and len(items) <= MAX_BATCH_EVENTS
    return False


async def test_any_payload_gets_a_documented_answer_and_only_valid_events_reach_kafka(
    tracking: Tracking,
) -> None:
    accepted = 0
    statuses: set[int] = set()

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(attempt=attempts())
    def check(attempt: Attempt) -> None:
        nonlocal accepted
        wire, headers, raw = _request(attempt, tracking.write_key)
        response = client.post(attempt.route, content=wire, headers=headers)
        statuses.add(response.status_code)
        if response.status_code == 200:
            assert response.content == b'{"success":true}'
            assert response.headers["content-type"] == "application/json"
            accepted += _accepted_events(attempt, raw)
            return
        assert response.status_code in ERROR_CODES, (response.status_code, response.text)
        body = response.json()
        assert set(body) == {"code", "message"} and isinstance(body["message"], str), body
        assert body["code"] in ERROR_CODES[response.status_code], body
        assert attempt.auth != "wrong-basic" or response.status_code == 401
        assert not _must_succeed(attempt, raw), (attempt.route, body)

    with httpx.Client(base_url=tracking.ingest.url, timeout=10) as client:
        await asyncio.to_thread(check)
        # A known-valid message on every single route, in every encoding that exists.
        for route, kind in SINGLE_ROUTES.items():
            message = {"userId": "u", "event": "E", "groupId": "g", "previousId": "p"}
            for encoding in ("identity", "gzip", "deflate"):
                attempt = Attempt(
                    route, {**message, "type": kind}, encoding, "text/plain", "basic", 0
                )
                wire, headers, _ = _request(attempt, tracking.write_key)
                response = await asyncio.to_thread(
                    client.post, route, content=wire, headers=headers
                )
                assert response.status_code == 200, response.text
                accepted += 1
    assert {200, 400, 401} <= statuses
    assert len(await events_on_topic(tracking.settings)) == accepted
