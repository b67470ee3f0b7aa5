"""CORS for browser SDKs (DESIGN §5): any origin may post; every OPTIONS is a preflight.

Written out instead of Starlette's CORSMiddleware, which answers a preflight asking for an
unlisted header with a plain-text 400; here the preflight always succeeds and lists what is
allowed, so the browser (not ingest) decides, and every error body stays JSON.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_HEADERS = "Authorization, Content-Type, X-Retry-Count, AnonymousId"
_PREFLIGHT_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
    (b"access-control-max-age", b"86400"),
]
# Browser SDKs back off by Retry-After, which a cross-origin script may read only if exposed.
_RESPONSE_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"Retry-After"),
]


class Cors:
    """Pure ASGI middleware: answers ``OPTIONS`` itself, marks other responses readable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await send(
                {"type": "http.response.start", "status": 204, "headers": _PREFLIGHT_HEADERS}
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_RESPONSE_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_origin)
