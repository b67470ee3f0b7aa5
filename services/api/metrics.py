"""Api metrics (DESIGN §10): the recorder and HTTP requests. Labels never carry ids."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.dead_letters import DEAD_LETTERS

RECORDER_RECORDS = Counter(
    "safar_recorder_records_total",
    "History records consumed by the recorder, by kind and outcome "
    "(inserted, duplicate, erased, invalid)",
    ["kind", "outcome"],
)
RECORDER_LAG = Gauge(
    "safar_recorder_lag",
    "Records of safar.history and safar.events not yet stored in PostgreSQL, per partition",
    ["topic", "partition"],
)
RECORDER_BATCH_SECONDS = Histogram(
    "safar_recorder_batch_seconds",
    "Time to store one batch of history records in PostgreSQL and commit its offsets",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECORDER_RETRIES = Counter(
    "safar_recorder_retries_total",
    "Batches whose write failed on a retriable error (PostgreSQL or Kafka unavailable)",
)
RECORDER_RUNNING = Gauge("safar_recorder_running", "1 while the history recorder consumes")
DLQ = DEAD_LETTERS
CUSTOMERS_IN_STAGE = Gauge(
    "safar_customers_in_stage",
    "Customers whose latest recorded move in a journey is to this stage (every api process "
    "exports the same count: aggregate with max)",
    ["journey", "stage"],
)
ERASURES = Counter("safar_customer_erasures_total", "Customers erased through the api")

REQUEST_DURATION = Histogram(
    "safar_api_request_duration_seconds",
    "Api request duration, by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """ASGI middleware timing every request, labelled by route template (never the path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_DURATION.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
