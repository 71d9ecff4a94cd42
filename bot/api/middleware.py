"""What every request passes before a route sees it: the API key (before any body is read), the body
size limit of its route (while reading), and the request metrics. Errors are {"error", "detail"}."""

from __future__ import annotations

import hmac
import time

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.api.metrics import ApiMetrics


class ApiError(StarletteHTTPException):
    """An error with a machine-readable code; rendered as {"error": code, "detail": detail}.

    Subclassing Starlette's HTTPException matters: FastAPI re-raises those unchanged while it
    parses a request body, where any other exception would become a generic 400.
    """

    def __init__(self, status_code: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.error = error


def _size(n: int) -> str:
    """Sizes as people read them: '32 KB', '60.0 MB'."""
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, size: int | None = None):
        got = f" ({_size(size)})" if size else ""
        advice = "Please send fewer or smaller photos." if limit >= 1024 * 1024 else "Please send a shorter request."
        super().__init__(
            413, "request_too_large", f"The request is too large{got}; the limit here is {_size(limit)}. {advice}",
        )


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# --- middleware -------------------------------------------------------------------------


class ApiKeyMiddleware:
    """With API_KEY set, refuse /v1/ requests without the key before any byte of their body is read:
    a 50 MB body without a key costs a header check, not 50 MB of memory and a parse."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = (api_key or "").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_key or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"")
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if not given and scheme.lower() == b"bearer":
            given = token.strip()
        if given and hmac.compare_digest(given, self.api_key):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "unauthorized", "A valid API key is required (header X-API-Key or Authorization: Bearer).",
            headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
        await response(scope, receive, send)


# A JSON request (a question and its context) needs a few KB; only photo uploads get the photo limit.
JSON_BODY_MAX_BYTES = 32 * 1024
PHOTO_ROUTES = ("/v1/identify", "/web/photo")


class BodySizeLimitMiddleware:
    """Refuse request bodies over the route's limit: up front by Content-Length, and while streaming
    (chunked uploads, or a client that lies about its Content-Length), so an oversized upload
    is never buffered in full. Photo routes (/v1/identify...) take `max_bytes`; every other route
    JSON_BODY_MAX_BYTES."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def limit_for(self, path: str) -> int:
        return self.max_bytes if path.startswith(PHOTO_ROUTES) else JSON_BODY_MAX_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                await error_response(400, "bad_request", "Invalid Content-Length header.")(scope, receive, send)
                return
            if declared_bytes > limit:
                await self._reject(scope, receive, send, limit, declared_bytes)
                return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Normally the app's exception handler has already answered 413; this catches a
            # body read outside a route (e.g. by another middleware).
            if response_started:
                raise
            await self._reject(scope, receive, send, limit)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int, size: int | None = None) -> None:
        error = BodyTooLarge(limit, size)
        # Connection: close, so the server does not try to read the rest of the body.
        response = error_response(413, error.error, error.detail, headers={"Connection": "close"})
        await response(scope, receive, send)


class MetricsMiddleware:
    """Count and time every HTTP request by its route *template* (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The router writes the matched route into the scope; unmatched paths share one label.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
