"""HTTP pieces every service shares: ``{"code","message"}`` errors, health, metrics, serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.definition_checks import DefinitionError, TemplateError
from shared.expressions import ExpressionError

log = logging.getLogger(__name__)

_CHECK_TIMEOUT_S = 2.0  # per readiness check

ReadinessCheck = Callable[[], Awaitable[bool]]

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class JsonResponse(Response):
    """JSON rendered with orjson (FastAPI's JsonResponse is deprecated)."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An error a client can act on; rendered as ``{"code","message"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON ``{"code","message"}``; nothing leaves as a bare 500."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(422, "invalid", message)

    async def expression_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ExpressionError)
        return error_response(422, "invalid_expression", str(exc))

    async def template_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, TemplateError)
        return error_response(422, "invalid_template", str(exc))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ExpressionError, expression_error)

    async def definition_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DefinitionError)
        return error_response(422, "invalid", str(exc))

    app.add_exception_handler(TemplateError, template_error)
    app.add_exception_handler(DefinitionError, definition_error)
    app.add_exception_handler(Exception, unexpected_error)


async def unexpected_error(_: Request, exc: Exception) -> Response:
    """A 500 with a JSON body; the traceback goes to the log."""
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error; the request was logged")


def add_health_routes(
    app: FastAPI, checks: Callable[[Request], Mapping[str, ReadinessCheck]]
) -> None:
    """``/healthz`` (the process lives), ``/readyz`` (dependencies answer), ``/metrics``."""

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: every dependency reachable")
    async def readyz(request: Request) -> Response:
        results: dict[str, bool] = {}
        for name, check in checks(request).items():
            try:
                # Bounded: a stalled dependency (Redis stopped but not gone) means not ready.
                async with asyncio.timeout(_CHECK_TIMEOUT_S):
                    results[name] = await check()
            except Exception as exc:  # noqa: BLE001 - whatever the failure, not ready
                log.warning("readiness check %s failed: %r", name, exc)
                results[name] = False
        ready = all(results.values())
        return JsonResponse(
            {"status": "ready" if ready else "not_ready", "checks": results},
            200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Run one app with uvicorn; SIGINT/SIGTERM end the lifespan cleanly."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    await server.serve()
    if not server.started:
        raise SystemExit(1)
