"""Raw request bodies: gunzip with a cap, JSON whatever the Content-Type."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from shared.http import ApiError

MAX_REQUEST_BYTES = 500 * 1024


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding: gzip`` without ever inflating past the request limit."""
    if not encoding or encoding.strip().lower() == "identity":
        data = body
    elif encoding.strip().lower() in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding.lower() else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            raise ApiError(400, "invalid_encoding", "the body is not valid gzip") from None
        if inflater.unconsumed_tail:
            data += b"x"  # more remains than the limit allows: report it as over-size
    else:
        raise ApiError(
            400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
        )
    if len(data) > MAX_REQUEST_BYTES:
        raise ApiError(
            400, "payload_too_large", f"the request is over {MAX_REQUEST_BYTES // 1024} KB"
        )
    return data


def parse_json(data: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return payload
