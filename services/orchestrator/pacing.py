"""Work on a hot path done at most once per interval (offset commits, checks, sweeps)."""

from __future__ import annotations

import time


class Every:
    """``due()`` is True at most once per ``interval_s`` of the monotonic clock (the first
    call included), and each True starts the next interval."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval_s
        return True
