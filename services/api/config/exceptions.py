"""Configuration errors a client can act on, and the HTTP mapping of template errors."""

from __future__ import annotations

from shared.http import ApiError


class UnknownReference(ApiError):
    """A rule names a journey or stage that does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "unknown_reference", message)


class InUse(ApiError):
    """A journey or stage cannot go while rules still name it."""

    def __init__(self, message: str) -> None:
        super().__init__(409, "conflict", message)
