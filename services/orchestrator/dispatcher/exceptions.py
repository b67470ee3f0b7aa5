"""Why one delivery attempt failed, and whether another attempt may succeed."""

from __future__ import annotations


class DeliveryError(Exception):
    """One attempt failed. ``retriable`` says whether a later attempt may succeed;
    ``retry_after_s`` is the receiver's own answer to "when" (Retry-After), if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retriable: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class TargetRefusedError(DeliveryError):
    """The webhook target is a private or loopback address and those are not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)
