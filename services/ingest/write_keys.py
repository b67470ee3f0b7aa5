"""Write-key authentication against the hashes published on ``safar.config``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from shared.definitions import ConfigSnapshot
from shared.http import ApiError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_request(authorization: str | None, payload: dict[str, Any]) -> str | None:
    """The write key: Basic-auth username (empty password), else ``writeKey`` in the body."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "unauthorized", "the Basic credentials are not base64") from None
        username = decoded.split(":", 1)[0]
        if username:
            return username
    body_key = payload.get("writeKey")
    return body_key if isinstance(body_key, str) and body_key else None


class WriteKeys:
    """The active key hashes; replaced whole when a configuration snapshot arrives."""

    def __init__(self) -> None:
        self._hashes: tuple[bytes, ...] = ()

    def update(self, snapshot: ConfigSnapshot) -> None:
        self._hashes = tuple(bytes.fromhex(h) for h in snapshot.write_keys)

    def authenticate(self, key: str | None) -> str:
        """The key's hash if it is active; 401 otherwise. Compares in constant time."""
        if not key:
            raise ApiError(401, "unauthorized", "a write key is required (Basic auth username)")
        digest = hashlib.sha256(key.encode()).digest()
        found = False
        for known in self._hashes:
            found |= hmac.compare_digest(known, digest)
        if not found:
            raise ApiError(401, "unauthorized", "unknown or revoked write key")
        return digest.hex()
