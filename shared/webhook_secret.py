"""Webhook signing secrets in the Standard Webhooks ``whsec_<base64>`` form (DESIGN §7)."""

from __future__ import annotations

import base64
import binascii

SECRET_PREFIX = "whsec_"
# An HMAC key shorter than this can be guessed; the standard's libraries make 24 bytes.
MIN_SECRET_BYTES = 16


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; the prefix is optional, as the
    standard's own libraries accept it either way. Raises ``ValueError`` when unusable
    (never quoting the secret)."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a webhook secret must be whsec_ followed by base64 ({exc})") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def check_secret(secret: str) -> None:
    """Raise ``ValueError`` for a secret that cannot sign, or is too short to be safe."""
    if len(decode_secret(secret)) < MIN_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret must hold at least {MIN_SECRET_BYTES} bytes of key "
            "(whsec_ and the base64 of, say, 24 random bytes)"
        )
