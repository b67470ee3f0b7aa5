"""Ingest throughput: the batch route in events/s, and the single-event route against a
bare FastAPI endpoint run side by side (both one uvicorn worker, same client)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import orjson
from rich.console import Console

from bench.http_load import LoadResult, request_bytes, run_load
from shared.config_feed import publish_snapshot
from shared.definitions import Bundle, ConfigSnapshot
from shared.embedded import die_with_parent, free_port
from shared.kafka import ensure_topics
from shared.settings import Settings

console = Console(stderr=True)
WRITE_KEY = "wk_bench"


@dataclass
class Result:
    batch_events_per_s: float
    single: list[float]
    bare: list[float]


async def _publish_write_key(settings: Settings) -> None:
    snapshot = ConfigSnapshot(
        version=1, bundle=Bundle(), write_keys=[hashlib.sha256(WRITE_KEY.encode()).hexdigest()]
    )
    await publish_snapshot(settings, snapshot)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def _auth() -> dict[str, str]:
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


async def run(settings: Settings, seconds: float = 5.0, rounds: int = 2) -> Result:
    settings = settings.model_copy(
        update={"ingest_port": free_port(), "ingest_rate_per_key": 1e9, "ingest_rate_burst": 1e9}
    )
    await ensure_topics(settings)
    await _publish_write_key(settings)
    env = os.environ | settings.as_env() | {"SAFAR_LOG_LEVEL": "WARNING"}
    bare_port = free_port()
    ingest = _spawn([sys.executable, "-m", "services.cli", "ingest"], env)
    bare = _spawn([sys.executable, "-m", "bench.bare_app", str(bare_port)], env)
    try:
        _wait_ready(f"http://127.0.0.1:{settings.ingest_port}/readyz")
        _wait_ready(f"http://127.0.0.1:{bare_port}/docs")
        single = orjson.dumps(
            {"userId": "u1", "event": "Product Viewed", "properties": {"sku": "a-1", "price": 25}}
        )
        batch = orjson.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": f"u{i}",
                        "event": "Product Viewed",
                        "properties": {"sku": "a-1", "price": 25},
                    }
                    for i in range(500)
                ]
            }
        )
        result = Result(0.0, [], [])
        with console.status("ingest batch route (500 events per request)..."):
            load = await run_load(
                "127.0.0.1",
                settings.ingest_port,
                request_bytes("/v1/batch", batch, _auth()),
                connections=4,
                seconds=seconds,
            )
        _check(load, "batch")
        result.batch_events_per_s = load.rate * 500
        for round_ in range(1, rounds + 1):
            with console.status(f"round {round_}/{rounds}: single-event route vs bare FastAPI"):
                ours = await run_load(
                    "127.0.0.1",
                    settings.ingest_port,
                    request_bytes("/v1/track", single, _auth()),
                    connections=32,
                    seconds=seconds,
                )
                base = await run_load(
                    "127.0.0.1",
                    bare_port,
                    request_bytes("/v1/track", single, _auth()),
                    connections=32,
                    seconds=seconds,
                )
            _check(ours, "single")
            _check(base, "bare")
            result.single.append(ours.rate)
            result.bare.append(base.rate)
            console.print(f"round {round_}: ingest {ours.rate:,.0f} req/s, bare {base.rate:,.0f}")
        return result
    finally:
        for proc in (ingest, bare):
            proc.terminate()
            proc.wait()


def _check(load: LoadResult, what: str) -> None:
    if set(load.statuses) != {200}:
        raise RuntimeError(f"{what}: unexpected statuses {dict(load.statuses)}")
