"""When to try a failed delivery again: a pure function of the attempt and the answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from services.orchestrator.dispatcher.exceptions import DeliveryError
from shared.settings import Settings


def is_retriable_status(status: int) -> bool:
    """5xx, 408, 425 and 429 may succeed later; 410 and every other 4xx will not."""
    return status >= 500 or status in (408, 425, 429)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` named by a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdecimal():  # not isdigit: "²" is a digit that float() refuses
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max((moment - now).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``schedule_s[i]`` is the pause after attempt ``i + 1``; a pause is stretched by up to
    ``jitter`` of itself, never shortened, so the schedule is a lower bound."""

    schedule_s: tuple[float, ...]
    jitter: float
    retry_after_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            tuple(settings.dispatch_retry_schedule_s),
            settings.dispatch_retry_jitter,
            settings.dispatch_retry_after_max_s,
        )

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s) + 1

    def delay_after(
        self, attempts_made: int, retry_after_s: float | None, rand: float
    ) -> float | None:
        """Seconds until the next attempt, or None when the retries are used up.
        ``rand`` in [0, 1) draws the jitter; a receiver's Retry-After wins over the schedule."""
        if attempts_made >= self.max_attempts:
            return None
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.retry_after_max_s)
        return self.schedule_s[attempts_made - 1] * (1.0 + self.jitter * rand)


@dataclass(frozen=True, slots=True)
class Decision:
    status: Literal["sent", "retrying", "failed"]
    retry_in_s: float | None = None
    reason: str | None = None


def decide(
    policy: RetryPolicy, attempts_made: int, error: DeliveryError | None, rand: float
) -> Decision:
    """What follows attempt number ``attempts_made``, which ended in ``error`` (None: sent)."""
    if error is None:
        return Decision("sent")
    if not error.retriable:
        return Decision("failed", reason=error.message)
    delay = policy.delay_after(attempts_made, error.retry_after_s, rand)
    if delay is None:
        return Decision("failed", reason=f"gave up after {attempts_made} attempts: {error.message}")
    return Decision("retrying", retry_in_s=delay, reason=error.message)
