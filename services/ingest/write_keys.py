"""Write-key authentication against the hashes published on ``safar.config``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from shared.definitions import ConfigSnapshot
from shared.http import ApiError


def hash_key(key: str) -> str:
    """The sha256 hex digest under which the api publishes a write key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_header(authorization: str | None) -> str | None:
    """The Basic-auth username (the password is empty), or None without Basic auth."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
        raise ApiError(401, "unauthorized", "the Basic credentials are not base64") from None
    return decoded.split(":", 1)[0] or None


def key_from_body(payload: dict[str, Any]) -> str | None:
    """``writeKey`` in the body, as the browser SDK and some server SDKs send it."""
    key = payload.get("writeKey")
    return key if isinstance(key, str) and key else None


class WriteKeys:
    """The active key hashes; replaced whole when a configuration snapshot arrives."""

    def __init__(self) -> None:
        self._hashes: tuple[bytes, ...] = ()
        self.loaded = False

    def update(self, snapshot: ConfigSnapshot) -> None:
        self._hashes = tuple(bytes.fromhex(h) for h in snapshot.write_keys)
        self.loaded = True

    def authenticate(self, key: str | None) -> str:
        """The key's hash if it is active; 401 otherwise. Compares in constant time.

        Before the first snapshot no key is known to be bad, so the answer is a retriable
        503 rather than a 401 that SDKs would treat as final and drop the events.
        """
        if not self.loaded:
            raise ApiError(
                503,
                "starting",
                "write keys are not loaded yet; retry shortly",
                {"Retry-After": "1"},
            )
        if not key:
            raise ApiError(
                401, "unauthorized", "a write key is required (Basic auth username or writeKey)"
            )
        digest = hashlib.sha256(key.encode()).digest()
        found = False
        for known in self._hashes:
            found |= hmac.compare_digest(known, digest)
        if not found:
            raise ApiError(401, "unauthorized", "unknown or revoked write key")
        return digest.hex()
