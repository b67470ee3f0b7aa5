"""The dispatcher's webhook client against the floor, in CPU per post, side by side.

Floor: a prepared request written on a kept-alive asyncio stream, its answer read by
Content-Length (``bench/http_load.py``), nothing built or parsed per request. Safar:
:class:`HttpClient` posting a signed webhook (its headers, its body size), building each
request and parsing each answer with httptools. Both post to the same bare receiver in
another process, ``concurrency`` requests at a time, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field

import httpx
import uvloop
from rich.console import Console

from bench.http_load import BareReceiver, exchange, request_bytes
from services.orchestrator.dispatcher.http_client import HttpClient
from services.orchestrator.dispatcher.signatures import signature_headers
from shared.embedded import free_port

console = Console(stderr=True)
_BODY = b'{"type":"webhook","id":"' + b"a" * 40 + b'","payload":{"sent":"1764000000.1"}}' * 2


@dataclass
class Result:
    floor_us: list[float] = field(default_factory=list)  # client CPU per post
    safar_us: list[float] = field(default_factory=list)


def _serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(BareReceiver, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    headers.update(signature_headers(b"k" * 24, "a" * 40, int(time.time()), _BODY))
    return headers


async def _floor(port: int, posts: int, concurrency: int) -> float:
    request = request_bytes("/hook", _BODY, _headers())
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    try:
        cpu = time.process_time()
        for _ in range(posts // concurrency):
            statuses = await asyncio.gather(*(exchange(r, w, request) for r, w in streams))
            assert statuses[0] == 204
        return (time.process_time() - cpu) / posts * 1e6
    finally:
        for _, writer in streams:
            writer.close()


async def _safar(port: int, posts: int, concurrency: int) -> float:
    client = HttpClient(user_agent="Safar-Bench/1")
    url = httpx.URL(f"http://127.0.0.1:{port}/hook")
    try:
        await asyncio.gather(*(client.post(url, _BODY, _headers()) for _ in range(concurrency)))
        cpu = time.process_time()
        for _ in range(posts // concurrency):
            # Headers are built per post, as the webhook channel signs each attempt.
            answers = await asyncio.gather(
                *(client.post(url, _BODY, _headers()) for _ in range(concurrency))
            )
            assert answers[0].status_code == 204
        return (time.process_time() - cpu) / posts * 1e6
    finally:
        await client.close()


async def run(posts: int = 20_000, concurrency: int = 20, rounds: int = 3) -> Result:
    port = free_port()
    receiver = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,))
    receiver.daemon = True
    receiver.start()
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        result = Result()
        for round_ in range(1, rounds + 1):
            with console.status(f"round {round_}/{rounds}: {posts:,} posts each..."):
                result.floor_us.append(await _floor(port, posts, concurrency))
                result.safar_us.append(await _safar(port, posts, concurrency))
            console.print(
                f"round {round_}: floor {result.floor_us[-1]:.1f} µs, "
                f"HttpClient {result.safar_us[-1]:.1f} µs of CPU per post"
            )
        return result
    finally:
        receiver.terminate()
        receiver.join()
