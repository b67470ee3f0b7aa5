"""Latency at a steady 1,000 events/s through ingest, orchestrator and dispatcher:
event -> webhook delivered (immediate rule), wait lateness, goal event -> wait cancelled."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from rich.console import Console

from bench.harness import cpu_seconds, embedded_servers, percentile
from bench.http_load import BareReceiver, exchange, request_bytes
from shared.config_feed import publish_snapshot
from shared.definitions import Bundle, ConfigSnapshot
from shared.embedded import die_with_parent, free_port
from shared.kafka import ensure_topics
from shared.settings import Settings

console = Console(stderr=True)
WRITE_KEY = "wk_latency"
WAIT_S = 2.0


@dataclass
class Arrivals:
    thanks: list[float] = field(default_factory=list)  # seconds from send to delivery
    thanks_sent: list[float] = field(default_factory=list)  # when each was sent (epoch s)
    nudges: list[float] = field(default_factory=list)  # seconds late against the deadline
    nudged_carts: set[str] = field(default_factory=set)


@dataclass
class Result:
    sent: int
    seconds: float
    event_to_action: list[float]
    event_to_action_sent: list[float]  # send time of each, to split the run into windows
    lateness: list[float]
    cancel_p99_bucket: float
    unexpected_nudges: int
    cpu_share: dict[str, float]  # per process: CPU seconds over the driven seconds


def _bundle(hook: str) -> dict[str, object]:
    return {
        "journeys": [{"key": "purchase", "stages": [{"key": "awareness", "when": "true"}]}],
        "rules": [
            {
                "key": "thank-you",
                "trigger": {"event": "Order Completed"},
                "action": {
                    "channel": "webhook",
                    "url": f"{hook}/thanks",
                    "payload": {"sent": "{{ trigger.properties.sent }}"},
                },
            },
            {
                "key": "abandoned-cart",
                "trigger": {"event": "Product Added"},
                "wait": {
                    "for": f"{WAIT_S:g}s",
                    "key": "event.properties.cart_id",
                    "unless": {
                        "event": "Order Completed",
                        "match": "event.properties.cart_id == trigger.properties.cart_id",
                    },
                },
                "action": {
                    "channel": "webhook",
                    "url": f"{hook}/nudge",
                    "payload": {
                        "sent": "{{ trigger.properties.sent }}",
                        "cart": "{{ trigger.properties.cart_id }}",
                    },
                },
            },
        ],
    }


async def _publish(settings: Settings, hook: str) -> None:
    snapshot = ConfigSnapshot(
        version=1,
        bundle=Bundle.model_validate(_bundle(hook)),
        write_keys=[hashlib.sha256(WRITE_KEY.encode()).hexdigest()],
    )
    await publish_snapshot(settings, snapshot)


class _Receiver(BareReceiver):
    """The webhook receiver: records when each thank-you and nudge arrived."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self._arrivals = arrivals

    def arrived(self, path: str, body: bytes) -> None:
        payload = orjson.loads(body)["payload"]
        if path == "/thanks":
            sent = float(payload["sent"])
            self._arrivals.thanks.append(time.time() - sent)
            self._arrivals.thanks_sent.append(sent)
        elif path == "/nudge":
            self._arrivals.nudges.append(time.time() - (float(payload["sent"]) + WAIT_S))
            self._arrivals.nudged_carts.add(payload["cart"])


class _Ingest:
    """Posts batches to ingest on kept-alive connections (as tracking SDKs do), opening
    another while all are busy."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()

    async def post(self, batch: list[dict[str, object]]) -> None:
        body = orjson.dumps({"batch": batch})
        request = request_bytes("/v1/batch", body, {"Authorization": f"Basic {self._token}"})
        if self._idle:
            reader, writer = self._idle.pop()
            try:
                status = await exchange(reader, writer, request)
            except ConnectionError:
                # The server closed it while it was idle (uvicorn's keep-alive timeout, 5 s),
                # before reading the request: sent again on a new connection, as SDKs do.
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
                status = await exchange(reader, writer, request)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            status = await exchange(reader, writer, request)
        if status != 200:
            writer.close()
            raise RuntimeError(f"ingest answered {status}")
        self._idle.append((reader, writer))

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


def _spawn(name: str, env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", name, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def _cancel_p99(metrics_text: str) -> float:
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("safar_wait_cancel_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= 0.99 * total)


async def run(settings: Settings, rate: int = 1000, seconds: float = 20.0) -> Result:
    hook_port = free_port()
    settings = settings.model_copy(
        update={
            "ingest_port": free_port(),
            "orchestrator_port": free_port(),
            "webhook_allow_private": True,
            "webhook_secret": "whsec_" + base64.b64encode(os.urandom(24)).decode(),
            "log_level": "WARNING",
        }
    )
    await ensure_topics(settings)
    await _publish(settings, f"http://127.0.0.1:{hook_port}")
    arrivals = Arrivals()
    receiver = await asyncio.get_running_loop().create_server(
        lambda: _Receiver(arrivals), "127.0.0.1", hook_port
    )
    env = os.environ | settings.as_env()
    log_path = Path(tempfile.gettempdir()) / "safar-bench-latency.log"
    # One process per orchestrator loop, as deployed for latency: the events loop never
    # waits behind deliveries or timers on a shared event loop.
    ports = {role: free_port() for role in ("timers", "dispatcher")}
    procs = {
        "ingest": _spawn("ingest", env, log_path),
        "events": _spawn("orchestrator", env, log_path, "--role", "events"),
        **{
            role: _spawn(
                "orchestrator",
                env | {"SAFAR_ORCHESTRATOR_PORT": str(port)},
                log_path,
                "--role",
                role,
            )
            for role, port in ports.items()
        },
    }
    try:
        async with httpx.AsyncClient() as client:
            for port in (settings.orchestrator_port, settings.ingest_port, *ports.values()):
                deadline = time.monotonic() + 60
                while True:
                    try:
                        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
                        if ready.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"port {port} not ready")
                    await asyncio.sleep(0.1)
            pids = {name: proc.pid for name, proc in procs.items()} | embedded_servers()
            pids["bench (load, receiver)"] = os.getpid()
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            sent, bought = await _drive(settings, rate, seconds)
            driven = time.perf_counter() - started
            cpu_share = {
                name: (cpu_seconds(pid) - cpu_before[name]) / driven for name, pid in pids.items()
            }
            # Let the last waits come due and their webhooks arrive.
            await asyncio.sleep(WAIT_S + 3)
            metrics = (
                await client.get(f"http://127.0.0.1:{settings.orchestrator_port}/metrics")
            ).text
        unexpected = len(arrivals.nudged_carts & bought)
        return Result(
            sent,
            seconds,
            arrivals.thanks,
            arrivals.thanks_sent,
            arrivals.nudges,
            _cancel_p99(metrics),
            unexpected,
            cpu_share,
        )
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait()
        receiver.close()


async def _drive(settings: Settings, rate: int, seconds: float) -> tuple[int, set[str]]:
    """Every 10 ms a batch: carts added; half of them bought 0.5-1.5 s later (the goal).
    Returns the events sent and the carts whose purchase ingest acknowledged before the
    cart's nudge was due (a purchase that reaches Safar later rightly does not cancel it)."""
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    started = time.perf_counter()
    sent = 0
    bought: set[str] = set()
    # (buy at, customer, cart, the cart's nudge due at, epoch s)
    pending: list[tuple[float, str, str, float]] = []
    posts: set[asyncio.Task[None]] = set()
    ingest = _Ingest(settings.ingest_port)

    async def post(batch: list[dict[str, object]], buys: list[tuple[str, float]]) -> None:
        await ingest.post(batch)
        acknowledged = time.time()
        bought.update(cart for cart, due in buys if acknowledged < due)

    failed: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        posts.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            failed.append(error)

    number = 0
    with console.status(f"{rate} events/s for {seconds:.0f}s..."):
        while (now := time.perf_counter()) - started < seconds:
            batch: list[dict[str, object]] = []
            due = [p for p in pending if p[0] <= now]
            pending = [p for p in pending if p[0] > now]
            buys = [(cart, nudge_at) for _, _, cart, nudge_at in due[:per_tick]]
            for _, customer, cart, _ in due[:per_tick]:
                batch.append(_event(customer, "Order Completed", cart, time.time()))
            while len(batch) < per_tick:
                number += 1
                customer, cart, added_at = f"lat-{number % 5000}", f"cart-{number}", time.time()
                batch.append(_event(customer, "Product Added", cart, added_at))
                if number % 2 == 0:
                    buy_at = now + 0.5 + (number % 10) / 10
                    pending.append((buy_at, customer, cart, added_at + WAIT_S))
            task = asyncio.create_task(post(batch, buys))
            posts.add(task)
            task.add_done_callback(finished)
            sent += len(batch)
            await asyncio.sleep(max(0.0, started + (sent / rate) - time.perf_counter()))
    await asyncio.gather(*posts)
    ingest.close()
    if failed:
        raise RuntimeError(f"{len(failed)} batches were not accepted: {failed[0]!r}")
    return sent, bought


def _event(customer: str, name: str, cart: str, sent: float) -> dict[str, object]:
    return {
        "type": "track",
        "userId": customer,
        "event": name,
        "properties": {"cart_id": cart, "sent": f"{sent:.6f}"},
    }


def summary(result: Result) -> list[str]:
    return [
        f"| event -> webhook delivered, p50 / p99 | "
        f"{percentile(result.event_to_action, 0.5) * 1000:,.0f} ms / "
        f"{percentile(result.event_to_action, 0.99) * 1000:,.0f} ms | target p99 <= 100 ms |",
        f"| wait lateness, p50 / p99 | {percentile(result.lateness, 0.5) * 1000:,.0f} ms / "
        f"{percentile(result.lateness, 0.99) * 1000:,.0f} ms | target p99 <= 1 s |",
        f"| goal event -> wait cancelled, p99 (histogram bucket) | "
        f"<= {result.cancel_p99_bucket * 1000:,.0f} ms | target p99 <= 100 ms |",
        f"| event -> webhook p99 by 10 s of the run | {_by_window(result)} | "
        "flat if the pipeline is steady |",
        f"| nudges for carts bought before the nudge was due | {result.unexpected_nudges} | "
        "expected 0 |",
        "| CPU while driven, % of a core | "
        + ", ".join(f"{name} {share:.0%}" for name, share in result.cpu_share.items())
        + " | where the cores go |",
    ]


def _by_window(result: Result, window_s: float = 10.0) -> str:
    """p99 of event -> webhook per window of send time: shows whether latency drifts as the
    run goes on (the embedded broker's fetches slow down as its in-memory log grows)."""
    if not result.event_to_action_sent:
        return "-"
    start = min(result.event_to_action_sent)
    windows: dict[int, list[float]] = {}
    for sent, latency in zip(result.event_to_action_sent, result.event_to_action, strict=True):
        windows.setdefault(int((sent - start) // window_s), []).append(latency)
    return " / ".join(f"{percentile(windows[w], 0.99) * 1000:,.0f} ms" for w in sorted(windows))
