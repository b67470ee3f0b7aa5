"""A real webhook receiver for the tests: uvicorn on a free port, every request verified
with the ``standardwebhooks`` library, answers scripted per path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from shared.embedded import free_port


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified: bool
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival

    def json(self) -> dict[str, object]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data


class WebhookReceiver:
    """``script(path, replies)``: the n-th request to ``/path`` gets ``replies[n]`` (the last
    one repeats); unscripted paths answer 200. Requests failing verification get 401."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)
        self._scripts: dict[str, Sequence[Reply]] = {}
        self._counts: dict[str, int] = {}
        self.received: list[Received] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def script(self, path: str, replies: Sequence[Reply]) -> str:
        self._scripts[path] = list(replies)
        return f"{self.url}/{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def start(self) -> WebhookReceiver:
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            assert not self._task.done(), "the receiver stopped at start"
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def _handle(self, request: Request) -> Response:
        wall, at = time.time(), time.monotonic()
        path = request.path_params["path"]
        try:
            body = await request.body()
        except ClientDisconnect:  # the sender died mid-request: nothing was received
            return Response(status_code=499)
        headers = dict(request.headers)
        try:
            self._webhook.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        self.received.append(
            Received(path, headers.get("webhook-id", ""), body, headers, verified, at, wall)
        )
        if not verified:
            return Response(b'{"error": "bad signature"}', 401)
        script = self._scripts.get(path, [Reply()])
        self._counts[path] = count = self._counts.get(path, 0) + 1
        reply = script[min(count, len(script)) - 1]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return Response(b"{}", reply.status, headers=reply.headers)
