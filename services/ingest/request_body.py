"""Raw request bodies: read with a cap, gunzip with a cap, JSON whatever the Content-Type."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shared.http import ApiError

MAX_REQUEST_BYTES = 500 * 1024
# What may arrive on the wire: gzip adds a few bytes of framing even to data it cannot shrink.
MAX_WIRE_BYTES = MAX_REQUEST_BYTES + 1024

_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
# Concatenated gzip members in one body: clients send one; a few are allowed.
_MAX_MEMBERS = 16


def _too_large() -> ApiError:
    return ApiError(400, "payload_too_large", f"the request is over {MAX_REQUEST_BYTES // 1024} KB")


def check_content_length(header: str | None) -> None:
    """Refuse a declared over-size body before reading any of it."""
    if header is not None and header.strip().isdecimal() and int(header) > MAX_WIRE_BYTES:
        raise _too_large()


async def read_body(chunks: AsyncIterator[bytes]) -> bytes:
    """The raw body, refused as soon as it grows past what any valid request needs."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_WIRE_BYTES:
            raise _too_large()
    return bytes(body)


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding: gzip`` without ever inflating past the request limit."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        data = body
    elif name in ("gzip", "x-gzip", "deflate"):
        data = _inflate(body, _ZLIB if name == "deflate" else _GZIP, name)
    else:
        raise ApiError(
            400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
        )
    if len(data) > MAX_REQUEST_BYTES:
        raise _too_large()
    return data


def _inflate(body: bytes, wbits: int, name: str) -> bytes:
    """Inflate every member of the stream, stopping one byte past the limit (gzip bombs)."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        if len(parts) == _MAX_MEMBERS:  # each member copies the rest: many would cost CPU
            raise ApiError(
                400, "invalid_encoding", f"the {name} body has over {_MAX_MEMBERS} members"
            )
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(rest, MAX_REQUEST_BYTES + 1 - size)
        except zlib.error:
            raise ApiError(400, "invalid_encoding", f"the body is not valid {name}") from None
        parts.append(part)
        size += len(part)
        if size > MAX_REQUEST_BYTES or inflater.unconsumed_tail:
            raise _too_large()
        if not inflater.eof:
            raise ApiError(400, "invalid_encoding", f"the {name} body is truncated")
        # Concatenated gzip members are one stream (RFC 1952); trailing zeros are padding.
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):
            return b"".join(parts)


def parse_json(data: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return payload
