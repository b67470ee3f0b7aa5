"""Token buckets and the Kafka circuit breaker, with time as plain numbers."""

from __future__ import annotations

import pytest

from services.ingest.circuit_breaker import CircuitBreaker
from services.ingest.rate_limit import RateLimiter

pytestmark = pytest.mark.timeout(10)


def test_a_bucket_allows_its_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=20)
    assert limiter.take("k", 20, now=0.0) == 0.0
    wait = limiter.take("k", 5, now=0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.take("k", 5, now=0.5) == 0.0
    assert limiter.take("k", 1, now=0.5) == pytest.approx(0.1)


def test_buckets_are_per_key() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=3)
    assert limiter.take("a", 3, now=0.0) == 0.0
    assert limiter.take("a", 1, now=0.0) > 0
    assert limiter.take("b", 3, now=0.0) == 0.0


def test_refill_never_exceeds_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=100, burst=10)
    assert limiter.take("k", 10, now=0.0) == 0.0
    assert limiter.take("k", 10, now=1000.0) == 0.0
    assert limiter.take("k", 1, now=1000.0) > 0


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    limiter = RateLimiter(rate_per_s=100, burst=50)
    assert limiter.take("k", 10, now=0.0) == 0.0
    assert limiter.take("k", 500, now=0.0) == pytest.approx(0.1)  # until the bucket is full
    assert limiter.take("k", 500, now=0.1) == 0.0
    # 450 events of debt: the next event waits for 4.5 s of refill.
    assert limiter.take("k", 1, now=0.1) == pytest.approx(4.51)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert RateLimiter.retry_after(0.001) == "1"
    assert RateLimiter.retry_after(1.0) == "1"
    assert RateLimiter.retry_after(1.2) == "2"


def test_rate_and_burst_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)


def test_the_breaker_fails_fast_while_open_and_probes_once_per_interval() -> None:
    breaker = CircuitBreaker(probe_interval=1.0)
    assert breaker.closed and breaker.allow(0.0) and breaker.allow(0.0)
    breaker.failed(now=10.0)
    assert not breaker.closed
    assert not breaker.allow(10.5)
    assert breaker.allow(11.0)  # the probe
    assert not breaker.allow(11.1)  # only one per interval
    breaker.failed(now=12.0)  # the probe failed too
    assert not breaker.allow(12.9)
    assert breaker.allow(13.0)
    breaker.succeeded()  # Kafka is back
    assert breaker.closed and breaker.allow(13.0) and breaker.allow(13.0)
