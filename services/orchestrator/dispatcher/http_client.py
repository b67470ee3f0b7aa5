"""Keep-alive HTTP/1.1 POSTs for the webhook channel.

A webhook is one small POST whose answer matters for its status, two headers and the start
of its body. A general client pays for what webhooks never use (cookies, redirects,
decompression, streaming, tracing hooks): aiohttp was about a quarter of the dispatcher's
CPU at 1,000 events/s (docs/benchmarks.md). Here the request goes out in one write and the
answer is parsed by httptools (llhttp, the parser of uvicorn and aiohttp). Connections are
kept per (scheme, host, port) and reused; one the server closed, or idle for longer than
``idle_s``, is dropped before use.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

import httptools
import httpx

from services.orchestrator.pacing import Every

# A body is read to its end to keep the connection; past this size the connection is
# closed instead (only the start of the body is kept).
_MAX_BODY = 1 << 20
# The status line and headers of an answer: past this the answer is refused (the parser
# would keep an endless header in memory).
_MAX_HEAD = 64 << 10
_ANSWER_HEADERS = (b"retry-after", b"location")
# Framing is the client's: a caller's headers of these names are left out.
_FRAMING_HEADERS = frozenset(("host", "content-length", "transfer-encoding", "connection"))
# With another address to try, a connection attempt gets this long (a dead IPv6 route must
# not use up the whole deadline); the last address gets what is left of the caller's.
_CONNECT_EACH_S = 1.0
# (host, port) -> the addresses to connect to, in order; it may refuse the host.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class HttpError(Exception):
    """The exchange failed before a whole answer arrived."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered: the status, the headers a decision needs, a snippet."""

    status_code: int
    retry_after: str | None
    location: str | None
    content: bytes


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time, answers parsed as they arrive."""

    def __init__(self, snippet: int) -> None:
        self._snippet = snippet
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[bytes, str] = {}
        self._content = bytearray()
        self._body_size = 0
        self._head_size = 0
        self._headers_done = False
        self.closed = False
        self.heard = False  # some bytes of the current answer arrived
        self.reusable = False
        self.idle_since = 0.0

    def usable(self, idle_after: float) -> bool:
        """Open, and idle since ``idle_after`` (monotonic) or later."""
        return not self.closed and self.idle_since > idle_after

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # nothing was asked: the connection is out of step
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("the server switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            # Also after a whole answer (bytes past its end): the connection is out of step.
            self._fail(HttpError(f"not a valid HTTP answer: {exc}"))
            self.close()
        if self._body_size > _MAX_BODY and not self._answer.done():
            self._complete(reusable=False)  # enough of it: the connection goes
        if not self._headers_done:
            self._head_size += len(data)
            if self._head_size > _MAX_HEAD:
                self._fail(HttpError(f"the answer's headers are over {_MAX_HEAD >> 10} KB"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        if self._headers_done:
            # The status is known: a body that ends with the connection (or is cut short)
            # still makes an answer.
            self._complete(reusable=False)
        else:
            reason = f": {exc}" if exc else ""
            self._fail(HttpError(f"the server closed the connection before answering{reason}"))

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is not None and self._answer.done():
            self.close()  # a second answer to one request: the connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _ANSWER_HEADERS:
            self._headers[name] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if len(self._content) < self._snippet:
            self._content += body[: self._snippet - len(self._content)]

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            self._reset()  # an interim answer (100 Continue, 103 Early Hints)
            return
        self._complete(reusable=self._parser.should_keep_alive())

    # --- one exchange --------------------------------------------------------------------

    async def exchange(self, request: bytes) -> Answer:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._reset()
        self.heard = False
        self.reusable = False
        self._transport.write(request)
        try:
            answer = await self._answer
        except BaseException:
            # Cancelled (a timeout) even as the answer came in, or failed: never reused.
            self.close()
            raise
        finally:
            self._answer = None
        if not self.reusable:
            self.close()
        return answer

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _reset(self) -> None:
        self._headers = {}
        self._content = bytearray()
        self._body_size = 0
        self._head_size = 0
        self._headers_done = False

    def _complete(self, *, reusable: bool) -> None:
        assert self._answer is not None
        self.reusable = reusable
        self._answer.set_result(
            Answer(
                self._parser.get_status_code(),
                self._headers.get(b"retry-after"),
                self._headers.get(b"location"),
                bytes(self._content),
            )
        )

    def _fail(self, error: HttpError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)


class HttpClient:
    """``await post(url, body, headers)`` on a kept-alive connection; no redirects followed.

    Cancel the call to time it out: its connection is then closed, never reused. A new
    connection goes to the addresses ``resolve`` gives for the host (the first that accepts),
    or, without one, to the host name as the system resolves it."""

    def __init__(
        self,
        *,
        user_agent: str,
        max_idle_per_host: int = 64,
        idle_s: float = 15.0,
        snippet: int = 200,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self._user_agent = user_agent
        self._resolve = resolve
        self._max_idle = max_idle_per_host
        self._idle_s = idle_s
        self._snippet = snippet
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._sweep_pace = Every(idle_s)
        self._closed = False

    async def post(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> Answer:
        if url.scheme not in ("http", "https"):
            raise HttpError(f"cannot post to a {url.scheme}:// url")
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, url.raw_host.decode("ascii"), port)
        request = self._request(url, body, headers)
        connection = self._take_idle(key)
        if connection is not None:
            try:
                return await self._exchange(key, connection, request)
            except HttpError:
                if connection.heard:
                    raise
                # Closed with no byte of an answer: mostly the server's idle timeout crossing
                # the request. It goes once more, on a new connection, at once; a receiver
                # that did get it before failing would have it again from the retry
                # schedule anyway, with the same webhook-id.
        return await self._exchange(key, await self._connect(key), request)

    async def close(self) -> None:
        self._closed = True  # posts still under way close their connection when done
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _exchange(
        self, key: tuple[str, str, int], connection: _Connection, request: bytes
    ) -> Answer:
        answer = await connection.exchange(request)
        self._put_back(key, connection)
        return answer

    def _request(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> bytes:
        given = {name.lower() for name in headers}
        lines = [
            f"POST {url.raw_path.decode('ascii')} HTTP/1.1",
            f"Host: {url.netloc.decode('ascii')}",
            f"Content-Length: {len(body)}",
            *(
                f"{name}: {value}"
                for name, value in headers.items()
                if name.lower() not in _FRAMING_HEADERS
            ),
        ]
        if "user-agent" not in given:
            lines.append(f"User-Agent: {self._user_agent}")
        if url.userinfo and "authorization" not in given:
            # https://user:password@host/...: Basic credentials, as browsers and aiohttp send.
            user, _, password = url.userinfo.decode("ascii").partition(":")
            token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
            lines.append(f"Authorization: Basic {token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        secure = scheme == "https"
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()  # once: building one costs milliseconds
        addresses = await self._resolve(host, port) if self._resolve else [host]
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for n, address in enumerate(addresses, start=1):
            try:
                async with asyncio.timeout(_CONNECT_EACH_S if n < len(addresses) else None):
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self._snippet),
                        address,
                        port,
                        ssl=self._ssl if secure else None,
                        server_hostname=host if secure else None,
                    )
            except OSError as exc:  # TimeoutError included: the next address is tried
                failure = exc
                continue
            return connection
        raise failure or HttpError(f"{host} has no address")

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        idle_after = time.monotonic() - self._idle_s
        while idle:
            connection = idle.pop()
            if connection.usable(idle_after):
                return connection
            connection.close()
        return None

    def _put_back(self, key: tuple[str, str, int], connection: _Connection) -> None:
        if self._closed:
            connection.close()
        if connection.closed:
            return
        now = time.monotonic()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            connection.close()
        else:
            connection.idle_since = now
            idle.append(connection)
        if self._sweep_pace.due():
            self._sweep(now - self._idle_s)

    def _sweep(self, idle_after: float) -> None:
        """Close connections idle too long, of every host (one seldom posted to included)."""
        for key, connections in list(self._idle.items()):
            kept = []
            for connection in connections:
                if connection.usable(idle_after):
                    kept.append(connection)
                else:
                    connection.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
