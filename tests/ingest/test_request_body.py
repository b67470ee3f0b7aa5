"""Raw bodies and write keys, with plain bytes: gzip, bombs, JSON, Basic auth."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from services.ingest.request_body import (
    MAX_REQUEST_BYTES,
    MAX_WIRE_BYTES,
    check_content_length,
    decompress,
    parse_json,
    read_body,
)
from services.ingest.write_keys import WriteKeys, hash_key, key_from_body, key_from_header
from shared.definitions import Bundle, ConfigSnapshot
from shared.http import ApiError

pytestmark = pytest.mark.timeout(10)


def _code(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def test_identity_and_gzip_bodies_come_out_the_same() -> None:
    raw = b'{"userId":"u","event":"E"}'
    assert decompress(raw, None) == raw
    assert decompress(raw, "identity") == raw
    assert decompress(gzip.compress(raw), "gzip") == raw
    assert decompress(gzip.compress(raw), " GZIP ") == raw
    assert decompress(gzip.compress(raw), "x-gzip") == raw
    assert decompress(zlib.compress(raw), "deflate") == raw
    # Concatenated members are one stream (up to 16 of them).
    assert decompress(gzip.compress(raw[:5]) + gzip.compress(raw[5:]), "gzip") == raw
    assert decompress(b"".join(gzip.compress(raw[i : i + 2]) for i in range(0, 32, 2)), "gzip")


@pytest.mark.parametrize(
    ("body", "encoding", "code"),
    [
        (b"not gzip at all", "gzip", "invalid_encoding"),
        (gzip.compress(b'{"a": 1}')[:-12], "gzip", "invalid_encoding"),  # truncated
        (gzip.compress(b"{}") + b"garbage", "gzip", "invalid_encoding"),
        (b"{}", "br", "unsupported_encoding"),
        (b"", "gzip", "invalid_encoding"),
        # 25,600 empty members fit in 512 KB; each one copied the rest of the body.
        (gzip.compress(b"") * 17, "gzip", "invalid_encoding"),
    ],
)
def test_bad_encodings_are_400(body: bytes, encoding: str, code: str) -> None:
    with pytest.raises(ApiError) as exc:
        decompress(body, encoding)
    assert _code(exc) == (400, code)


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100 * 1024
    with pytest.raises(ApiError) as exc:
        decompress(bomb, "gzip")
    assert _code(exc) == (400, "payload_too_large")
    # Many small members that add up past the limit are refused as well.
    member = gzip.compress(b" " * (100 * 1024))
    with pytest.raises(ApiError) as exc:
        decompress(member * 6, "gzip")
    assert _code(exc) == (400, "payload_too_large")


def test_the_request_limit_is_inclusive_after_decompression() -> None:
    exact = b" " * MAX_REQUEST_BYTES
    assert decompress(gzip.compress(exact), "gzip") == exact
    assert decompress(exact, None) == exact
    for body, encoding in ((exact + b" ", None), (gzip.compress(exact + b" "), "gzip")):
        with pytest.raises(ApiError) as exc:
            decompress(body, encoding)
        assert _code(exc) == (400, "payload_too_large")


async def test_read_body_stops_past_the_wire_limit() -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 4096):
            yield b"x" * 4096

    assert len(await read_body(chunks(64 * 1024))) == 64 * 1024
    with pytest.raises(ApiError) as exc:
        await read_body(chunks(MAX_WIRE_BYTES + 8192))
    assert _code(exc) == (400, "payload_too_large")
    check_content_length(None)
    check_content_length(str(MAX_WIRE_BYTES))
    check_content_length("\u00b2")  # a digit to isdigit(), not to int(): left to the body
    with pytest.raises(ApiError):
        check_content_length(str(MAX_WIRE_BYTES + 1))


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b'{"a": NaN}']
)
def test_anything_but_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(ApiError) as exc:
        parse_json(body)
    assert _code(exc) == (400, "invalid_json")


def test_json_is_parsed_whatever_it_looks_like() -> None:
    assert parse_json(b' {"batch": []} ') == {"batch": []}


def _basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_write_key_from_basic_username_else_body() -> None:
    assert key_from_header(_basic("wk_1")) == "wk_1"
    assert key_from_header("basic " + base64.b64encode(b"wk_2").decode()) == "wk_2"
    assert key_from_header(_basic("")) is None
    assert key_from_header("Bearer token") is None
    assert key_from_header(None) is None
    for header in ("Basic !!!not base64", "Basic \xe9\xe9", "Basic " + "/w=="):
        with pytest.raises(ApiError) as exc:
            key_from_header(header)  # not base64; not ASCII; not UTF-8 once decoded
        assert _code(exc) == (401, "unauthorized")
    assert key_from_body({"writeKey": "wk_3"}) == "wk_3"
    assert key_from_body({"writeKey": 3}) is None
    assert key_from_body({}) is None


def _snapshot(version: int, *keys: str) -> ConfigSnapshot:
    return ConfigSnapshot(version=version, bundle=Bundle(), write_keys=[hash_key(k) for k in keys])


def test_write_keys_follow_the_snapshots() -> None:
    keys = WriteKeys()
    with pytest.raises(ApiError) as exc:
        keys.authenticate("wk_a")
    assert _code(exc) == (503, "starting")  # not 401: SDKs would drop the events
    assert exc.value.headers["Retry-After"]
    keys.update(_snapshot(1, "wk_a", "wk_b"))
    assert keys.authenticate("wk_a") == hash_key("wk_a")
    for bad in ("wk_c", None, ""):
        with pytest.raises(ApiError) as exc:
            keys.authenticate(bad)
        assert _code(exc) == (401, "unauthorized")
    keys.update(_snapshot(2, "wk_b"))  # wk_a revoked
    with pytest.raises(ApiError):
        keys.authenticate("wk_a")
    assert keys.authenticate("wk_b") == hash_key("wk_b")
