"""Shared benchmark plumbing: the embedded stack, demo data, timing and reporting."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

from shared.definitions import Bundle, ConfigSnapshot
from shared.embedded import EmbeddedStack
from shared.events import Event, format_time
from shared.settings import Settings

DEMO_BUNDLE = Path(__file__).with_name("demo_bundle.yaml")
NAMES = [
    ("Product Viewed", 40),
    ("Products Searched", 10),
    ("Product Added", 20),
    ("Checkout Started", 8),
    ("Order Completed", 8),
    ("Page Viewed", 10),
    ("Referral Sent", 2),
    ("Order Refunded", 2),
]


def demo_snapshot(version: int = 1) -> ConfigSnapshot:
    bundle = Bundle.model_validate(yaml.safe_load(DEMO_BUNDLE.read_text()))
    return ConfigSnapshot(version=version, bundle=bundle)


def demo_events(count: int, customers: int, seed: int = 7) -> list[Event]:
    """A plausible shop stream: many views, fewer carts, some orders."""
    rng = random.Random(seed)
    names = [n for n, weight in NAMES for _ in range(weight)]
    now = format_time(datetime.now(UTC))
    events = []
    for _ in range(count):
        customer = f"cust-{rng.randrange(customers)}"
        events.append(
            Event(
                message_id=str(uuid.uuid4()),
                type="track",
                customer_id=customer,
                user_id=customer,
                timestamp=now,
                received_at=now,
                name=rng.choice(names),
                properties={
                    "price": rng.choice([9.5, 25.0, 60.0]),
                    "cart_id": f"cart-{rng.randrange(3)}",
                    "revenue": rng.choice([20.0, 150.0]),
                },
                context={"library": {"name": "analytics-python", "version": "2.3.3"}},
            )
        )
    return events


@contextmanager
def embedded_stack() -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="safar-bench-") as tmp:
        stack = EmbeddedStack(Path(tmp))
        urls = stack.start()
        try:
            yield Settings(
                kafka_bootstrap=urls.kafka_bootstrap,
                redis_url=urls.redis_url,
                database_url=urls.database_url,
                namespace=f"bench{uuid.uuid4().hex[:6]}",
            )
        finally:
            stack.stop()


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def _stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of ``/proc/<pid>/stat`` after it (Linux)."""
    head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    return head.split("(", 1)[1], tail.split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far."""
    fields = _stat(pid)[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def embedded_servers() -> dict[str, int]:
    """The embedded stack's Kafka broker and Redis server, children of this process."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = _stat(entry.name)
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid() and name in ("tansu", "valkey-server", "redis-server"):
            found["kafka" if name == "tansu" else "redis"] = int(entry.name)
    return found
