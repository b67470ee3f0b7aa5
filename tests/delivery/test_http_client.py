"""The webhook HTTP client against real sockets: servers that answer the ways receivers do
(kept alive, chunked, until close, interim answers, TLS) and the ways they fail."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from services.orchestrator.dispatcher.exceptions import TargetRefusedError
from services.orchestrator.dispatcher.http_client import HttpClient, HttpError
from services.orchestrator.dispatcher.private_targets import public_addresses

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server: ``handler`` runs once per connection; requests are recorded."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head and Content-Length body), or None at the end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            await self._handler(reader, writer)
        finally:
            writer.close()
            self.writers.discard(writer)


@asynccontextmanager
async def serving(
    make: Callable[[Server], Handler], tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(lambda r, w: make(server)(r, w))
    tcp = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = tcp.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        # Connections the client keeps alive are closed here: from Python 3.12.1 on,
        # wait_closed() waits for every connection of the server.
        for writer in list(server.writers):
            writer.close()
        tcp.close()
        await tcp.wait_closed()


def answering(*answers: bytes) -> Callable[[Server], Handler]:
    """Each request on a connection gets the next answer; the connection stays open after
    the last until the client closes it."""

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                if await server.read_request(reader) is None:
                    return
                writer.write(answer)
                await writer.drain()
            await reader.read()

        return handle

    return make


def answering_once(answer: bytes) -> Callable[[Server], Handler]:
    """One request per connection gets ``answer``; then the server closes the connection."""

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()

        return handle

    return make


def keep_answering(answer: bytes) -> Callable[[Server], Handler]:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.read_request(reader) is not None:
                writer.write(answer)
                await writer.drain()

        return handle

    return make


def url(server: Server, path: str = "/hook?x=1", scheme: str = "http") -> httpx.URL:
    return httpx.URL(f"{scheme}://127.0.0.1:{server.port}{path}")


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(user_agent="Safar-Test/1")
    yield http
    await http.close()


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def test_a_request_is_one_post_with_its_headers_and_body(client: HttpClient) -> None:
    async with serving(keep_answering(NO_CONTENT)) as server:
        answer = await client.post(url(server), b'{"a":1}', {"X-Custom": "yes"})
    assert answer.status_code == 204
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 7" in lines and b"User-Agent: Safar-Test/1" in lines
    assert b"X-Custom: yes" in lines
    assert body == b'{"a":1}'


async def test_connections_are_kept_alive_and_reused(client: HttpClient) -> None:
    async with serving(keep_answering(NO_CONTENT)) as server:
        for _ in range(5):
            assert (await client.post(url(server), b"{}", {})).status_code == 204
        await asyncio.gather(*(client.post(url(server), b"{}", {}) for _ in range(3)))
    assert len(server.requests) == 8
    assert server.connections == 3  # the three concurrent posts needed three connections


async def test_chunked_and_sized_bodies_are_read_whole_and_the_start_kept() -> None:
    chunked = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n" + f"{300:x}\r\n".encode() + b"w" * 300 + b"\r\n0\r\n\r\n"
    )
    sized = b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow"
    moved = b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\nContent-Length: 0\r\n\r\n"
    http = HttpClient(user_agent="t", snippet=50)
    try:
        async with serving(answering(chunked, sized, moved)) as server:
            first = await http.post(url(server), b"{}", {})
            second = await http.post(url(server), b"{}", {})
            third = await http.post(url(server), b"{}", {})
    finally:
        await http.close()
    assert (first.status_code, first.content) == (500, b"hello" + b"w" * 45)
    assert (second.status_code, second.retry_after, second.content) == (429, "7", b"slow")
    assert (third.status_code, third.location) == (301, "https://elsewhere/")
    assert server.connections == 1


async def test_a_body_that_ends_with_the_connection(client: HttpClient) -> None:
    until_close = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nno such hook"
    async with serving(answering_once(until_close)) as server:
        first = await client.post(url(server), b"{}", {})
        second = await client.post(url(server), b"{}", {})
    assert (first.status_code, first.content) == (400, b"no such hook")
    assert second.status_code == 400
    assert server.connections == 2  # a connection the server closes is not reused


async def test_interim_answers_are_skipped(client: HttpClient) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"
    )
    async with serving(answering(answer, NO_CONTENT)) as server:
        first = await client.post(url(server), b"{}", {})
        second = await client.post(url(server), b"{}", {})
    assert (first.status_code, first.content) == (202, b"ok")
    assert second.status_code == 204 and server.connections == 1


async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(
    client: HttpClient,
) -> None:
    # The server answers once per connection and then closes it, as an idle timeout does.
    async with serving(answering_once(NO_CONTENT)) as server:
        await client.post(url(server), b"{}", {})
        [kept] = [c for connections in client._idle.values() for c in connections]
        async with asyncio.timeout(5):
            while not kept.closed:  # the close arrives while the connection sits idle
                await asyncio.sleep(0.01)
        assert (await client.post(url(server), b"{}", {})).status_code == 204
    # Known closed before use: a new connection at once, the request sent once.
    assert server.connections == 2 and len(server.requests) == 2


async def test_a_close_crossing_the_request_on_a_reused_connection_is_retried_once(
    client: HttpClient,
) -> None:
    # Each connection answers one request, then closes without answering the next one.
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(NO_CONTENT)
            await writer.drain()
            await server.read_request(reader)  # read, never answered

        return handle

    async with serving(make) as server:
        await client.post(url(server), b"{}", {})
        assert (await client.post(url(server), b"{}", {})).status_code == 204
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_fresh_connection_closed_before_answering_is_an_error(client: HttpClient) -> None:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)

        return handle

    async with serving(make) as server:
        with pytest.raises(HttpError, match="closed the connection before answering"):
            await client.post(url(server), b"{}", {})
    assert server.connections == 1  # not retried: the caller's retry schedule decides


async def test_garbage_is_an_error_and_the_connection_is_dropped(client: HttpClient) -> None:
    async with serving(answering(b"SMTP ready\r\n\r\n")) as server:
        with pytest.raises(HttpError, match="not a valid HTTP answer"):
            await client.post(url(server), b"{}", {})
    assert client._idle == {}


async def test_a_timed_out_request_closes_its_connection(client: HttpClient) -> None:
    answers: list[bytes] = []

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if server.connections == 1:
                await server.read_request(reader)
                answers.append(await reader.read())  # the client hangs up: b""
                return
            await keep_answering(NO_CONTENT)(server)(reader, writer)

        return handle

    async with serving(make) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.post(url(server), b"{}", {})
        assert (await client.post(url(server), b"{}", {})).status_code == 204
        async with asyncio.timeout(5):
            while not answers:
                await asyncio.sleep(0.01)
    assert answers == [b""] and server.connections == 2


async def test_a_huge_body_is_cut_short_and_its_connection_not_reused(client: HttpClient) -> None:
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 3_000_000
    async with serving(keep_answering(huge)) as server:
        first = await client.post(url(server), b"{}", {})
        second = await client.post(url(server), b"{}", {})
    assert first.status_code == second.status_code == 200
    assert first.content == b"x" * 200
    assert server.connections == 2


async def test_endless_headers_are_an_error_not_held_in_memory(client: HttpClient) -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-Endless: " + b"x" * 200_000  # no end of headers
    big_ok = b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 30_000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with serving(answering_once(endless)) as server:
        with pytest.raises(HttpError, match="headers are over 64 KB"):
            await client.post(url(server), b"{}", {})
    async with serving(answering_once(big_ok)) as server:
        assert (await client.post(url(server), b"{}", {})).status_code == 200


async def test_https_with_a_verified_certificate_and_refused_without() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    verified = HttpClient(user_agent="t", ssl_context=trusting)
    default = HttpClient(user_agent="t")  # the system's CAs do not know this one
    try:
        async with serving(keep_answering(NO_CONTENT), tls=server_tls) as server:
            answer = await verified.post(url(server, scheme="https"), b"{}", {})
            assert answer.status_code == 204
            with pytest.raises(ssl.SSLCertVerificationError):
                await default.post(url(server, scheme="https"), b"{}", {})
    finally:
        await verified.close()
        await default.close()


async def test_connecting_nowhere_is_an_os_error(client: HttpClient) -> None:
    async with serving(keep_answering(NO_CONTENT)) as server:
        closed = url(server)
    with pytest.raises(OSError):
        await client.post(closed, b"{}", {})


async def test_new_connections_go_to_the_addresses_resolved_and_checked() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        # The first address refuses (nothing listens there), the second is the server.
        return ["::1", "127.0.0.1"] if host == "hooks.example" else []

    http = HttpClient(user_agent="t", resolve=resolve)
    try:
        async with serving(keep_answering(NO_CONTENT)) as server:
            target = httpx.URL(f"http://hooks.example:{server.port}/hook")
            for _ in range(3):
                assert (await http.post(target, b"{}", {})).status_code == 204
    finally:
        await http.close()
    assert asked == [("hooks.example", server.port)]  # kept alive: resolved once
    assert f"Host: hooks.example:{server.port}".encode() in server.requests[0]


async def test_a_refusing_resolver_stops_the_request_before_any_connection() -> None:
    async with serving(keep_answering(NO_CONTENT)) as server:
        http = HttpClient(user_agent="t", resolve=public_addresses)
        try:
            with pytest.raises(TargetRefusedError, match="private or loopback"):
                await http.post(url(server), b"{}", {})
        finally:
            await http.close()
    assert server.connections == 0


@pytest.mark.parametrize(
    "extra",
    [b"garbage\r\n\r\n", NO_CONTENT, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"],
    ids=["garbage", "a second answer", "half a second answer"],
)
async def test_bytes_past_the_answer_make_its_connection_unusable(
    client: HttpClient, extra: bytes
) -> None:
    async with serving(
        keep_answering(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" + extra)
    ) as server:
        first = await client.post(url(server), b"{}", {})
        second = await client.post(url(server), b"{}", {})
    assert first.status_code == second.status_code == 201
    assert server.connections == 2 and len(server.requests) == 2


async def test_an_exchange_cancelled_as_its_answer_arrives_closes_the_connection(
    client: HttpClient,
) -> None:
    async with serving(keep_answering(NO_CONTENT)) as server:
        await client.post(url(server), b"{}", {})
        [connection] = [c for connections in client._idle.values() for c in connections]
        exchange = asyncio.create_task(connection.exchange(b"POST / HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0)  # the request is written; the answer is not read yet
        connection.data_received(NO_CONTENT)  # the answer completes...
        exchange.cancel()  # ...and a timeout lands in the same turn
        with pytest.raises(asyncio.CancelledError):
            await exchange
    assert connection.closed


async def test_framing_headers_are_the_clients_and_user_agent_and_credentials_are_sent(
    client: HttpClient,
) -> None:
    given = {
        "Content-Length": "1",
        "Transfer-Encoding": "chunked",
        "Host": "evil",
        "User-Agent": "Shop/2",
    }
    async with serving(keep_answering(NO_CONTENT)) as server:
        target = httpx.URL(f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/hook")
        assert (await client.post(target, b"{}", given)).status_code == 204
    head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"Content-Length: 2" in head and b"Content-Length: 1" not in head
    assert not any(line.lower().startswith((b"transfer-encoding", b"host: evil")) for line in head)
    assert b"User-Agent: Shop/2" in head and b"User-Agent: Safar-Test/1" not in head
    assert b"Authorization: Basic dXNAZXI6cDpzcw==" in head  # base64("us@er:p:ss")
