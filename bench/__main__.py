"""``python -m bench``: Safar's performance targets (DESIGN §9), measured side by side.

Each benchmark runs on uvloop, the event loop the services run on (``safar`` commands).
"""

from __future__ import annotations

import typer
import uvloop
from rich.console import Console

from bench import (
    broker_partitions,
    ingest_throughput,
    latency,
    orchestrator_throughput,
    profile_memory,
    webhook_client,
)
from bench.harness import embedded_stack, median
from shared.settings import Settings

app = typer.Typer(help="Benchmarks: each measures Safar against a baseline in the same run.")
console = Console(width=200)  # markdown rows, never wrapped


@app.callback()
def main() -> None:
    """Run one benchmark; results are markdown rows for docs/benchmarks.md."""


@app.command()
def orchestrator(
    events: int = 60_000,
    customers: int = 5_000,
    rounds: int = 3,
    profile_cache: int = typer.Option(
        Settings().orchestrator_profile_cache,
        help="profiles the events loop keeps in memory (0: read each from Redis)",
    ),
) -> None:
    """Events loop vs aiokafka getmany + one pipelined Redis write per event."""
    with embedded_stack() as settings:
        settings = settings.model_copy(update={"orchestrator_profile_cache": profile_cache})
        result = uvloop.run(orchestrator_throughput.run(settings, events, customers, rounds))
    console.print(
        f"| orchestrator, demo config | raw limit {median(result.raw):,.0f} ev/s | "
        f"safar {median(result.safar):,.0f} ev/s | ratio {result.ratio:.0%} (target >= 60%) |"
    )
    console.print(
        f"| orchestrator, CPU of the process per event | raw limit "
        f"{median(result.raw_cpu):.0f} µs | safar {median(result.safar_cpu):.0f} µs | "
        f"ratio {median(result.raw_cpu) / median(result.safar_cpu):.0%} |"
    )


@app.command()
def ingest(seconds: float = 5.0, rounds: int = 2) -> None:
    """Batch route events/s; single-event route vs a bare FastAPI endpoint."""
    with embedded_stack() as settings:
        result = uvloop.run(ingest_throughput.run(settings, seconds, rounds))
    ratio = median(result.single) / median(result.bare)
    console.print(
        f"| ingest batch route, one worker | {result.batch_events_per_s:,.0f} events/s | "
        "target >= 50,000 |"
    )
    console.print(
        f"| ingest single-event route | {median(result.single):,.0f} req/s vs bare FastAPI "
        f"{median(result.bare):,.0f} req/s | ratio {ratio:.0%} (target >= 70%) |"
    )


@app.command(name="latency")
def latency_command(rate: int = 1000, seconds: float = 20.0) -> None:
    """At a steady rate: event -> action delivered, wait lateness, cancel latency."""
    with embedded_stack() as settings:
        result = uvloop.run(latency.run(settings, rate, seconds))
    console.print(f"{result.sent:,} events in {result.seconds:.0f}s")
    for row in latency.summary(result):
        console.print(row)


@app.command()
def memory(customers: int = 10_000, events_each: int = 8) -> None:
    """Redis memory per customer profile (demo journey, no pending waits)."""
    with embedded_stack() as settings:
        per_profile = uvloop.run(profile_memory.run(settings, customers, events_each))
    console.print(
        f"| Redis memory per profile ({customers:,} customers, {events_each} events each) | "
        f"{per_profile:,.0f} bytes | target <= 1,536 bytes |"
    )


@app.command()
def broker(partitions: tuple[int, int] = (12, 4), seconds: float = 15.0, rounds: int = 2) -> None:
    """The embedded broker's CPU for safar.history's traffic at two partition counts."""
    with embedded_stack() as settings:
        result = uvloop.run(broker_partitions.run(settings, partitions, seconds, rounds))
    cpu = {n: median(shares) for n, shares in result.broker_cpu.items()}
    first, second = partitions
    for n in partitions:
        console.print(
            f"| broker, history traffic over {n} partitions | "
            f"{median(result.consumed_per_s[n]):,.0f} records/s fetched | "
            f"{cpu[n]:.0%} of a core (rounds: "
            f"{', '.join(f'{share:.0%}' for share in result.broker_cpu[n])}) |"
        )
    ratio = cpu[second] / cpu[first]
    console.print(f"| broker CPU, {second} vs {first} partitions | ratio {ratio:.2f} |")


@app.command()
def webhook(posts: int = 20_000, concurrency: int = 20, rounds: int = 3) -> None:
    """The dispatcher's webhook client vs prepared bytes on a stream, CPU per post."""
    result = uvloop.run(webhook_client.run(posts, concurrency, rounds))
    floor, safar = median(result.floor_us), median(result.safar_us)
    console.print(
        f"| webhook client, {concurrency} posts at a time | floor {floor:.1f} µs | "
        f"HttpClient {safar:.1f} µs of CPU per post | ratio {floor / safar:.0%} |"
    )


if __name__ == "__main__":
    app()
