"""Fail fast while Kafka is down, and notice by itself when it is back. Pure: time is an input.

After a produce fails, requests are answered 503 at once instead of each waiting out the
Kafka deadline; one request per ``probe_interval`` is still let through as a probe, and the
first probe that Kafka acknowledges closes the breaker again.
"""

from __future__ import annotations


class CircuitBreaker:
    def __init__(self, probe_interval: float) -> None:
        self._probe_interval = probe_interval
        self._next_probe: float | None = None  # None while closed

    @property
    def closed(self) -> bool:
        return self._next_probe is None

    def allow(self, now: float) -> bool:
        """Whether a request may try Kafka now; while open, one per probe interval may."""
        if self._next_probe is None:
            return True
        if now < self._next_probe:
            return False
        self._next_probe = now + self._probe_interval
        return True

    def succeeded(self) -> None:
        self._next_probe = None

    def failed(self, now: float) -> None:
        self._next_probe = now + self._probe_interval
