"""The HTTP API's wiring: one conversation core (bot.core.BotCore, over bot.engine.Engine) behind
FastAPI, with the middleware, error handlers and the command line.

    python -m bot api [--host 0.0.0.0] [--port 8080]

The model and the index load once, in the engine's background thread started by the lifespan, so
/healthz answers while a large model is still loading and orchestrators do not kill the pod for
being slow to start; /readyz keeps traffic away until both are in. Inference runs on the engine's
worker threads (never on the event loop), at most WORKER_THREADS at a time, because the model
already uses several cores per call and more parallel calls only add latency; single photos that
arrive while the model is busy are batched into one call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.api.metrics import ApiMetrics
from bot.api.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware, MetricsMiddleware, error_response
from bot.api.routes import router
from bot.core import BotCore
from bot.engine import Engine
from bot.web import Sessions, WebSecurityHeaders
from bot.web import router as web_router
from config import Settings, get_settings

log = logging.getLogger("bot.api")

# Multipart framing (boundaries, part headers) on top of the photos themselves.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def public_without_key(settings: Settings, host: str) -> str | None:
    """Why the API must not start (published beyond this machine with no API_KEY), or None.

    API_PUBLIC_BIND (set by Compose from API_BIND) is where the API is reachable; without it, the
    --host it binds. In a container the entrypoint binds 0.0.0.0, so Compose's loopback default
    (API_BIND=127.0.0.1) is what lets it start without a key."""
    exposed = settings.api_public_bind or host
    if settings.api_key and settings.api_key.get_secret_value():
        return None
    if exposed.startswith(LOOPBACK):
        return None
    return (f"Refusing to serve on {exposed} without API_KEY: anyone who can reach it could use it. "
            "Set API_KEY (clients send it as X-API-Key), or publish the API on 127.0.0.1 only.")


def max_request_bytes(settings: Settings) -> int:
    return settings.max_image_bytes * settings.max_images_per_observation + MULTIPART_OVERHEAD_BYTES


def create_app(settings: Settings | None = None, classifier: Any = None, answerer: Any = None) -> FastAPI:
    """Build the API. Pass `classifier`/`answerer` to serve those (tests) instead of loading
    the configured model (settings.model_dir) and index (Answerer.from_settings)."""
    settings = settings or get_settings()
    metrics = ApiMetrics()
    # Never lazy: requests do not wait for a load; the engine's loader thread loads and retries.
    # The API is the end of the line: it never forwards to INFERENCE_URL itself.
    engine = Engine.local(settings, classifier=classifier, answerer=answerer, lazy=False)
    engine.on_batch = metrics.batch_size.observe
    core = BotCore(settings, engine=engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start(refresh_sources=True)  # the loader thread also re-ingests guides changed since the build
        try:
            yield
        finally:
            engine.stop()  # the loader thread; the pools stay, for a lifespan that starts again

    app = FastAPI(
        title="Mushroom identification API",
        version="1",
        summary="Identify mushrooms from photos and answer questions from field guides. "
        "Never a permission to eat: 'unknown' means treat it as poisonous.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.core = core
    app.state.engine = engine  # what /readyz reports on
    app.state.metrics = metrics
    # Added last = outermost: metrics also count the 413s of the body limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_request_bytes(settings))
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)  # before the body limit: no key, no body read
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(WebSecurityHeaders)  # outermost: the page's headers on every answer, a 413 included
    _add_error_handlers(app)
    app.include_router(router)
    # The web page: one more front door on the same core (bot.web), with its own session, never the key.
    secret = settings.web_session_secret.get_secret_value() if settings.web_session_secret else None
    app.state.sessions = Sessions(secret, settings.web_session_hours)
    app.include_router(web_router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = getattr(exc, "error", None) or {
            404: "not_found", 405: "method_not_allowed", 400: "bad_request",
        }.get(exc.status_code, "http_error")
        return error_response(exc.status_code, error, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(tuple(err.get("loc", ()))[-1:] == ("image",) for err in errors):
            return error_response(422, "no_image", "Send at least one photo in the multipart field 'image'.")
        if any(tuple(err.get("loc", ()))[-1:] == ("question",) and err.get("type") == "string_pattern_mismatch"
               for err in errors):
            return error_response(422, "empty_question", "The question is empty. Please ask something about mushrooms.")
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err.get('loc', ()) if part != 'body') or 'body'}: {err.get('msg')}"
            for err in exc.errors()
        )
        return error_response(422, "invalid_request", problems or "Invalid request.")

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "Something went wrong on our side. Please try again later.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot api", description="Serve the HTTP API with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; use 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--log-level", default=None, help="overrides LOG_LEVEL")
    args = parser.parse_args(argv)

    import uvicorn

    from bot.logs import secret_values, setup_logging

    settings = get_settings()
    level = (args.log_level or settings.log_level).upper()
    setup_logging(level, secret_values(settings))
    refusal = public_without_key(settings, args.host)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    log.info("serving on http://%s:%d (API key %s)", args.host, args.port,
             "required" if settings.api_key else "not required")
    # One process per container: scale with replicas (HPA), not uvicorn workers, so each
    # process holds one model copy and the CPU requests stay honest.
    # log_config=None: uvicorn's loggers use the root handlers set up above, secret redaction included.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=level.lower(),
                log_config=None, timeout_graceful_shutdown=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
