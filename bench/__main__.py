"""``python -m bench``: Safar's performance targets (DESIGN §9), measured side by side."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from bench import orchestrator_throughput
from bench.harness import embedded_stack, median

app = typer.Typer(help="Benchmarks: each measures Safar against a baseline in the same run.")
console = Console()


@app.callback()
def main() -> None:
    """Run one benchmark; results are markdown rows for docs/benchmarks.md."""


@app.command()
def orchestrator(events: int = 60_000, customers: int = 5_000, rounds: int = 3) -> None:
    """Events loop vs aiokafka getmany + one pipelined Redis write per event."""
    with embedded_stack() as settings:
        result = asyncio.run(orchestrator_throughput.run(settings, events, customers, rounds))
    console.print(
        f"| orchestrator, demo config | raw limit {median(result.raw):,.0f} ev/s | "
        f"safar {median(result.safar):,.0f} ev/s | ratio {result.ratio:.0%} (target >= 60%) |"
    )


if __name__ == "__main__":
    app()
