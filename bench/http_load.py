"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

Python HTTP clients cost more per request than the servers under test; writing prepared
request bytes and reading responses by Content-Length keeps the client out of the way.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    """Send one prepared request on a kept-alive connection; the answer's status."""
    writer.write(payload)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    headers = []
    while (line := await reader.readline()) not in (b"\r\n", b""):
        headers.append(line)
    await reader.readexactly(content_length(headers))
    return int(status_line.split()[1])


def content_length(header_lines: list[bytes]) -> int:
    """The Content-Length among a message's header lines (0 when absent)."""
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _worker(host: str, port: int, payload: bytes, until: float, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            result.statuses[await exchange(reader, writer, payload)] += 1
            result.latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


async def run_load(
    host: str, port: int, payload: bytes, *, connections: int, seconds: float
) -> LoadResult:
    """Closed-loop load: ``connections`` clients, each sending as fast as answers come."""
    started = time.perf_counter()
    result = LoadResult(seconds)
    until = started + seconds
    await asyncio.gather(*(_worker(host, port, payload, until, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


class BareReceiver(asyncio.Protocol):
    """A webhook receiver: HTTP/1.1 with Content-Length bodies, kept alive, answered 204;
    :meth:`arrived` sees each request.

    A bare protocol rather than an ASGI server: it shares the machine's cores with what it
    measures, and a web framework costs several times as much per request."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].split(b"\r\n")
            length = content_length(head[1:])
            if len(self._buffer) < end + 4 + length:
                return  # the rest of the body is on its way
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self.arrived(head[0].split()[1].decode(), body)
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    def arrived(self, path: str, body: bytes) -> None:
        """One request's path and body (nothing is done with them here)."""
