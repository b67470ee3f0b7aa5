"""Ingest metrics (DESIGN §10). Labels are bounded: types, outcomes, route templates."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "safar_ingest_events_total",
    "Events received, by type and outcome (accepted, rejected, unavailable, rate_limited)",
    ["type", "outcome"],
)
REQUEST_DURATION = Histogram(
    "safar_ingest_request_duration_seconds",
    "Ingest request duration, by route template and status",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KAFKA_AVAILABLE = Gauge(
    "safar_ingest_kafka_available",
    "1 while Kafka acknowledges produces, 0 while ingest answers 503 (circuit open)",
)


# The labelled children, looked up once: ``labels()`` takes a lock on every call. The label
# sets are bounded, so the caches are too.
@cache
def events(kind: str, outcome: str) -> Counter:
    return EVENTS.labels(kind, outcome)


@cache
def request_duration(route: str, status: int) -> Histogram:
    return REQUEST_DURATION.labels(route, str(status))
