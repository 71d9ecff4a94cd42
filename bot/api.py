"""HTTP API: the vision model and the knowledge base behind FastAPI.

    python -m bot api [--host 0.0.0.0] [--port 8080]

Endpoints (JSON; errors are always {"error": <code>, "detail": <sentence>}):
- POST /v1/identify       multipart field `image`, repeatable: several photos = one observation
- POST /v1/identify/each  same upload, one identification per photo (what `identify_each` does)
- POST /v1/ask            {"question": ..., "species": optional label, "photo": optional identification,
                          "poisoning": optional bool} -> answer (first reply), more, citations, ...
- GET  /v1/info           model version and labels, index version, input limits
- GET  /healthz           the process is alive (always open)
- GET  /readyz            200 once the model and the index are loaded, 503 before (always open)
- GET  /metrics           Prometheus text format (always open; keep it on the cluster network)
- GET  /docs, /openapi.json

The model and the index load once, in a background thread started by the lifespan, so
/healthz answers while a large model is still loading and orchestrators do not kill the pod
for being slow to start; /readyz keeps traffic away until both are in. Inference runs in
worker threads (never on the event loop), at most `WORKER_THREADS` at a time, because the
model already uses several cores per call and more parallel calls only add latency; single
photos that arrive while the model is busy are batched into one call (MicroBatcher).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import math
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, File, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from pydantic import BaseModel, Field, StrictFloat
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.settings import Settings, get_settings
from knowledge_base.language import clean_text

log = logging.getLogger("bot.api")

MAX_QUESTION_CHARS = 2000
MAX_FILENAME_CHARS = 100
# Multipart framing (boundaries, part headers) on top of the photos themselves.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# How long the loader waits before trying again when the index (or model) is not there yet,
# e.g. while the re-ingest Job is still building it.
LOAD_RETRY_SECONDS = 5.0
MAX_LOAD_RETRY_SECONDS = 60.0
# Fields of ingest.store.serving_info published on /metrics (stable, bounded values only).
INDEX_INFO_LABELS = ("version", "collection", "built_at")
# How often a loaded API checks whether a re-ingest switched the serving index.
INDEX_WATCH_SECONDS = 30.0

# ImageError.reason -> HTTP status. 413 for "too big" in any sense (bytes or pixels, which is
# how a decompression bomb is caught), 415 for "not an image", 422 for a damaged one.
IMAGE_ERROR_STATUS = {
    "too_many_bytes": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "corrupt": 422,
    "empty": 422,
    "unreadable": 422,
    "not_found": 422,
}


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


class BodySizeLimitMiddleware:
    """Refuse request bodies over the route's limit: up front by Content-Length, and while streaming
    (chunked uploads, or a client that lies about its Content-Length), so an oversized upload
    is never buffered in full. Photo routes (/v1/identify...) take `max_bytes`; every other route
    JSON_BODY_MAX_BYTES."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def limit_for(self, path: str) -> int:
        return self.max_bytes if path.startswith("/v1/identify") else JSON_BODY_MAX_BYTES

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


class ApiMetrics:
    """Prometheus metrics in a registry of their own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mushroom_api_requests", "HTTP requests handled, by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "mushroom_api_request_duration_seconds", "Time to answer a request, by route template.",
            ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.images = Counter(
            "mushroom_api_images", "Photos classified.", registry=self.registry,
        )
        self.verdicts = Counter(
            "mushroom_api_verdicts", "Identification verdicts returned.", ["verdict"], registry=self.registry,
        )
        self.batch_size = Histogram(
            "mushroom_api_batch_size", "Single-photo requests run together in one model call.",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32),
        )
        self.ready = Gauge(
            "mushroom_api_ready", "1 when the component is loaded.", ["component"], registry=self.registry,
        )
        self.model_info = Info("mushroom_api_model", "The vision model being served.", registry=self.registry)
        self.index_info = Info("mushroom_api_index", "The knowledge-base index being served.",
                               registry=self.registry)


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


# --- batching ---------------------------------------------------------------------------


class MicroBatcher:
    """Runs single-photo identifications that arrive while the model is busy together, in one
    `identify_each` call.

    One batch through the network costs much less than the same photos one at a time (ONNX
    Runtime on 2 cores: about 29 photos/s at batch 16 against 20 at batch 1). There is no
    timer: a batch is whatever queued up during the previous model call, so at low load a
    request never waits for company. For one photo, `identify_each` and `identify` compute the
    same thing (the calibrated probabilities and the verdict of that photo).
    """

    def __init__(self, get_classifier, metrics: ApiMetrics, max_batch: int = 16) -> None:
        self.get_classifier = get_classifier
        self.metrics = metrics
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def identify(self, image: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            # (Re)start on this event loop (a test client may run each request on a new loop).
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="api-micro-batcher")
        future = loop.create_future()
        self._queue.put_nowait((image, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._worker = None

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(image, future) for image, future in batch if not future.done()]  # skip cancelled
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            try:
                results = await anyio.to_thread.run_sync(self.get_classifier().identify_each,
                                                         [image for image, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


# --- loaded components ------------------------------------------------------------------


class Components:
    """The classifier and the answerer, loaded once in a background thread (unless injected)."""

    def __init__(self, settings: Settings, metrics: ApiMetrics, classifier: Any = None, answerer: Any = None):
        self.settings = settings
        self.metrics = metrics
        self.classifier = classifier
        self.answerer = answerer
        self._answerer_injected = answerer is not None
        self.index_info: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._after_load()

    @property
    def ready(self) -> bool:
        return self.classifier is not None and self.index_loaded

    @property
    def index_loaded(self) -> bool:
        """An injected answerer counts as loaded; one we opened must have found the index
        (Answerer.from_settings falls back to catalog-only answers when there is none)."""
        if self.answerer is None:
            return False
        return self._answerer_injected or getattr(self.answerer, "retriever", True) is not None

    def start(self) -> None:
        if self.classifier is not None and self._answerer_injected:
            return  # everything injected: nothing to load or to follow
        self._thread = threading.Thread(target=self._run, name="api-loader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_ready(self, timeout: float) -> bool:
        """For tests and benchmarks: block until loaded (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready

    def _run(self) -> None:
        self._load_until_ready()
        if self._answerer_injected:
            return
        # The Answerer stays on the collection it opened; a re-ingest (or rollback) switches the
        # serving alias, so look for a new version now and then and move to it.
        while not self._stop.wait(INDEX_WATCH_SECONDS):
            self._follow_index()

    def _follow_index(self) -> None:
        info = read_index_info(self.settings)
        if not info.get("collection") or info.get("collection") == self.index_info.get("collection"):
            return
        from knowledge_base.answer import Answerer

        try:
            answerer = Answerer.from_settings(self.settings)
        except Exception as error:  # noqa: BLE001 - keep serving the version we have
            log.warning("could not open the new index %s: %s", info.get("collection"), error)
            return
        if getattr(answerer, "retriever", None) is not None:
            self._publish_index(info)  # first the version, then the answerer: /readyz never sees one without the other
            self.answerer = answerer  # one reference swap: requests in flight keep the old one
            log.info("now serving index %s", self.index_info.get("collection"))

    def _load_until_ready(self) -> None:
        delay = LOAD_RETRY_SECONDS
        while not self._stop.is_set():
            if self.classifier is None:
                self._try("model", self._load_classifier)
            if not self.index_loaded:
                # A catalog-only answerer keeps serving /v1/ask meanwhile; we retry for the index.
                self._try("index", self._load_answerer)
            self._after_load()
            if self.ready:
                log.info("ready: model %s, index %s", self.classifier.version, self.index_info.get("version"))
                return
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_LOAD_RETRY_SECONDS)

    def _try(self, component: str, load) -> None:
        try:
            load()
            self.errors.pop(component, None)
        except Exception as error:  # noqa: BLE001 - any failure keeps /readyz at 503 and is retried
            message = f"{type(error).__name__}: {error}"
            if self.errors.get(component) != message:  # log each distinct failure once
                log.warning("%s not loaded yet (retrying every %.0fs): %s", component, LOAD_RETRY_SECONDS, message)
            self.errors[component] = message

    def _load_classifier(self) -> None:
        from vision_model.classifier import Classifier

        started = time.perf_counter()
        self.classifier = Classifier.load(self.settings.model_dir, threads=inference_threads())
        log.info("model %s loaded in %.1fs", self.classifier.version, time.perf_counter() - started)

    def _load_answerer(self) -> None:
        from knowledge_base.answer import Answerer

        answerer = Answerer.from_settings(self.settings)
        if getattr(answerer, "retriever", None) is not None:
            # The version before the answerer: once the answerer is in, /readyz says ready and names it.
            self._publish_index(read_index_info(self.settings))
        if self.answerer is None or getattr(answerer, "retriever", None) is not None:
            self.answerer = answerer
        if not self.index_loaded:
            raise RuntimeError("no serving index yet (answering from the catalog only); run `python -m ingest run`")

    def _after_load(self) -> None:
        """Publish versions and readiness to /metrics."""
        self.metrics.ready.labels("model").set(1 if self.classifier is not None else 0)
        self.metrics.ready.labels("index").set(1 if self.index_loaded else 0)
        if self.classifier is not None:
            self.metrics.model_info.info({"version": str(getattr(self.classifier, "version", "unknown"))})
        if self.index_loaded and not self.index_info:  # an injected answerer
            self._publish_index(read_index_info(self.settings))

    def _publish_index(self, info: dict[str, Any]) -> None:
        self.index_info = info
        self.metrics.index_info.info({key: str(info.get(key)) for key in INDEX_INFO_LABELS})


def inference_threads() -> int | None:
    """CPU threads for one inference: the container's CPU limit (cgroup v2 cpu.max) when there
    is one, since the CPU count a process sees is the node's, and running 16 threads on a
    2-CPU quota gets the pod throttled. None: let the classifier decide."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def read_index_info(settings: Settings) -> dict[str, Any]:
    """The serving index's version (ingest.store.serving_info); {} when it cannot be read."""
    try:
        from ingest.store import serving_info

        return dict(serving_info(settings) or {})
    except Exception as error:  # noqa: BLE001 - the version is informative, never blocking
        log.info("index version unavailable: %s", error)
        return {}


# --- request/response models ------------------------------------------------------------


class PhotoBody(BaseModel):
    top: str | None = Field(default=None, max_length=200, description="Top label of the identification.")
    probability: float = Field(default=0.0, ge=0.0, le=1.0, strict=True)
    verdict: str = Field(default="unknown", max_length=32)
    abstained: bool = Field(default=False, strict=True)
    dangerous: list[tuple[str, StrictFloat]] = Field(default_factory=list, max_length=10,
                                                description="[label, probability] of its dangerous candidates")


class AskRequest(BaseModel):
    question: str = Field(description="The question, in plain language (not blank).", pattern=r"\S",
                          examples=["Is the fly agaric edible?"])
    species: str | None = Field(
        default=None, max_length=200,
        description="Optional species label (e.g. from /v1/identify) the question is about.",
        examples=["amanita_muscaria"],
    )
    photo: PhotoBody | None = Field(
        default=None,
        description="The identification the question is about (from /v1/identify): the answer then follows "
                    "its verdict and names its dangerous candidates instead of describing the top guess.",
    )
    poisoning: bool = Field(default=False, strict=True, description="The conversation is about a possible poisoning.")


class ErrorBody(BaseModel):
    error: str
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request (a body that is not valid JSON or multipart)"},
    401: {"model": ErrorBody, "description": "API key missing or wrong"},
    413: {"model": ErrorBody, "description": "Too large: photo, pixels, request or number of photos"},
    415: {"model": ErrorBody, "description": "Not an image"},
    422: {"model": ErrorBody, "description": "Invalid input (damaged photo, empty question...)"},
    503: {"model": ErrorBody, "description": "Still loading the model or the index"},
}


# --- the app ----------------------------------------------------------------------------

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when API_KEY is set.")
bearer_scheme = HTTPBearer(auto_error=False, description="Alternative to X-API-Key: `Authorization: Bearer <key>`.")


def require_api_key(
    request: Request,
    header_key: str | None = Security(api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> None:
    expected = request.app.state.settings.api_key
    if expected is None or not expected.get_secret_value():
        return
    given = header_key or (bearer.credentials if bearer else None)
    if not given or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ApiError(
            401, "unauthorized", "A valid API key is required (header X-API-Key or Authorization: Bearer).",
            headers={"WWW-Authenticate": "Bearer"},
        )


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
    components = Components(settings, metrics, classifier=classifier, answerer=answerer)

    batcher = MicroBatcher(lambda: components.classifier, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        components.start()
        try:
            yield
        finally:
            await batcher.close()
            components.stop()

    app = FastAPI(
        title="Mushroom identification API",
        version="1",
        summary="Identify mushrooms from photos and answer questions from field guides. "
        "Never a permission to eat: 'unknown' means treat it as poisonous.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.components = components
    app.state.metrics = metrics
    app.state.batcher = batcher
    # Added last = outermost: metrics also count the 413s of the body limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_request_bytes(settings))
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)  # before the body limit: no key, no body read
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)

    limiter: list[anyio.CapacityLimiter] = []  # created on first use, inside the event loop

    async def in_worker_thread(func, *args):
        if not limiter:
            limiter.append(anyio.CapacityLimiter(max(1, settings.worker_threads)))
        return await anyio.to_thread.run_sync(lambda: func(*args), limiter=limiter[0])

    def need(component: str) -> Any:
        value = components.classifier if component == "model" else components.answerer
        if value is None:
            raise ApiError(503, "not_ready", f"The {component} is still loading; try again shortly.",
                           headers={"Retry-After": str(int(LOAD_RETRY_SECONDS))})
        return value

    async def read_photos(uploads: list[UploadFile] | None) -> tuple[list[bytes], list[str]]:
        """The uploaded photos' bytes and names (decoded later, in the worker thread)."""
        if not uploads:
            raise ApiError(422, "no_image", "Send at least one photo in the multipart field 'image'.")
        if len(uploads) > settings.max_images_per_observation:
            raise ApiError(
                413, "too_many_images",
                f"Too many photos ({len(uploads)}); send at most {settings.max_images_per_observation} "
                "per observation.",
            )
        blobs = []
        for upload in uploads:
            if upload.size is not None and upload.size > settings.max_image_bytes:  # the real size, unread
                raise ApiError(413, "too_many_bytes", (
                    f"{upload.filename or 'photo'}: that photo is too large ({upload.size / 2**20:.1f} MB); "
                    f"the limit is {settings.max_image_bytes / 2**20:.1f} MB. Please send a smaller or more "
                    "compressed photo."))
            blobs.append(await upload.read(settings.max_image_bytes + 1))
        # Client-chosen names are echoed back (in results and errors): keep them short.
        names = [(upload.filename or f"photo {i + 1}")[:MAX_FILENAME_CHARS] for i, upload in enumerate(uploads)]
        return blobs, names

    def decode_then(infer):
        """Decode the photos and run `infer` on them in ONE worker-thread call (one thread hop
        per request; decoding of one request overlaps the inference of another)."""

        def run(blobs: list[bytes], names: list[str]):
            return infer(_decode_all(blobs, names, settings))

        return run

    @app.post("/v1/identify", responses=ERROR_RESPONSES, dependencies=[Depends(require_api_key)],
              tags=["vision"])
    async def identify(
        image: list[UploadFile] = File(description="One or more photos of the same mushroom.", min_length=1),
    ) -> dict[str, Any]:
        """Identify one mushroom from one or several photos (one observation).

        Returns the vision CLI's JSON: `top_k` (calibrated probabilities), `verdict`,
        `abstained`, `danger_probability` and `model_version`."""
        classifier = need("model")
        blobs, names = await read_photos(image)
        if len(blobs) == 1:
            # One photo: decoded in a worker thread, then batched with concurrent requests.
            decoded = await in_worker_thread(_decode_all, blobs, names, settings)
            identification = await batcher.identify(decoded[0])
        else:
            identification = await in_worker_thread(decode_then(classifier.identify), blobs, names)
        result = identification.to_dict(image=names)
        result.setdefault("model_version", classifier.version)
        result["n_images"] = len(blobs)
        _count(metrics, [result], len(blobs))
        return result

    @app.post("/v1/identify/each", responses=ERROR_RESPONSES, dependencies=[Depends(require_api_key)],
              tags=["vision"])
    async def identify_each(
        image: list[UploadFile] = File(description="Photos, each identified on its own.", min_length=1),
    ) -> dict[str, Any]:
        """Identify each photo separately: `{"results": [...], "model_version": ...}`."""
        classifier = need("model")
        blobs, names = await read_photos(image)
        identifications = await in_worker_thread(decode_then(classifier.identify_each), blobs, names)
        results = [ident.to_dict(image=name) for ident, name in zip(identifications, names, strict=True)]
        _count(metrics, results, len(blobs))
        return {"results": results, "model_version": classifier.version}

    @app.post("/v1/ask", responses=ERROR_RESPONSES, dependencies=[Depends(require_api_key)],
              tags=["knowledge base"])
    async def ask(body: AskRequest) -> dict[str, Any]:
        """Answer a question from the species catalog and the field guides, with citations."""
        question = clean_text(body.question, MAX_QUESTION_CHARS + 1).strip()  # valid Unicode, no control chars
        # A question of control characters alone is empty once cleaned: the answerer says so kindly (200).
        if len(question) > MAX_QUESTION_CHARS:
            raise ApiError(422, "question_too_long",
                           f"The question is too long; please keep it under {MAX_QUESTION_CHARS} characters.")
        answerer = need("index")
        species = clean_text(body.species or "", 200).strip() or None
        photo = None
        if body.photo is not None:
            from knowledge_base.answer import PhotoContext

            photo = PhotoContext.from_dict(body.photo.model_dump())
        answer = await in_worker_thread(answerer.ask, question, species, photo, body.poisoning)
        return answer.to_dict()

    @app.get("/v1/info", dependencies=[Depends(require_api_key)], tags=["service"])
    async def info() -> dict[str, Any]:
        """Model version and labels, index version, and the input limits clients must respect."""
        classifier = need("model")
        return {
            "model_version": classifier.version,
            "labels": list(classifier.labels),
            "index": components.index_info,
            "limits": {
                "max_image_bytes": settings.max_image_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_images_per_observation": settings.max_images_per_observation,
                "max_question_chars": MAX_QUESTION_CHARS,
            },
        }

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Does not wait for the model."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], responses={503: {"model": ErrorBody}})
    async def readyz() -> Response:
        """Readiness: 200 once the model and the index are loaded, 503 before."""
        if not components.ready:
            missing = [name for name, loaded in (("model", components.classifier is not None),
                                                 ("index", components.index_loaded)) if not loaded]
            reasons = "; ".join(f"{name}: {components.errors.get(name, 'loading')}" for name in missing)
            return error_response(503, "not_ready", f"Not loaded yet: {reasons}")
        return JSONResponse({
            "status": "ready",
            "model_version": components.classifier.version,
            "index_version": components.index_info.get("version"),
        })

    @app.get("/metrics", tags=["service"], include_in_schema=True, response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _decode_all(blobs: Sequence[bytes], names: Sequence[str], settings: Settings) -> list[Any]:
    from vision_model.images import ImageError, decode_image

    images = []
    for blob, name in zip(blobs, names, strict=True):
        try:
            images.append(decode_image(blob, max_bytes=settings.max_image_bytes,
                                       max_pixels=settings.max_image_pixels))
        except ImageError as error:
            status = IMAGE_ERROR_STATUS.get(error.reason, 422)
            prefix = f"{name}: " if len(blobs) > 1 else ""
            raise ApiError(status, error.reason, prefix + str(error)) from None
    return images


def _count(metrics: ApiMetrics, results: list[dict[str, Any]], n_images: int) -> None:
    metrics.images.inc(n_images)
    for result in results:
        metrics.verdicts.labels(str(result.get("verdict"))).inc()


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


# --- CLI --------------------------------------------------------------------------------


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
