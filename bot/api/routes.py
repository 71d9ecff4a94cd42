"""The HTTP API's routes: a thin adapter that turns requests into calls of the conversation core
(`core.identify`, `core.identify_each`, `core.ask`, the same methods the chat front doors use) and
their results or UserFacingErrors into JSON.

Endpoints (JSON; errors are always {"error": <code>, "detail": <sentence>}):
- POST /v1/identify       multipart field `image`, repeatable: several photos = one observation
- POST /v1/identify/each  same upload, one identification per photo
- POST /v1/ask            {"question": ..., "species": optional label, "photo": optional identification,
                          "poisoning": optional bool} -> answer (first reply), more, citations, ...
- POST /v1/feedback       {"token": the identification's feedback_token, "vote": right|wrong|unsure,
                          "label": optional species, "user": the client's id for its user} -> what was recorded
- POST /v1/forget         {"user": ...}: that user's votes (and kept photos) are deleted
- GET  /v1/info           model version and labels, index version, input limits
- GET  /healthz           the process is alive (always open)
- GET  /readyz            200 once the model and the index are loaded, 503 before (always open)
- GET  /metrics           Prometheus text format (always open; keep it on the cluster network)
A photo that cannot be read is skipped with a note (`notes`), as in a chat; a request fails only
when none of its photos is usable.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, File, Request, Security, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.api.middleware import ApiError, error_response
from bot.api.schemas import (
    ERROR_RESPONSES,
    MAX_QUESTION_CHARS,
    AskRequest,
    ErrorBody,
    FeedbackRequest,
    ForgetRequest,
)
from bot.core import BotCore, UserFacingError
from bot.engine import LOAD_RETRY_SECONDS
from knowledge_base.answer_types import PhotoContext
from knowledge_base.language import clean_text
from vision_model.images import too_large

MAX_FILENAME_CHARS = 100
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


def get_core(request: Request) -> BotCore:
    return request.app.state.core


def api_error(exc: UserFacingError, component: str) -> ApiError:
    """A core's UserFacingError as the API's error: 503 while loading, else the photo's status."""
    if exc.outcome == "unavailable":
        return ApiError(503, "not_ready", f"The {component} is still loading; try again shortly.",
                        headers={"Retry-After": str(int(LOAD_RETRY_SECONDS))})
    return ApiError(IMAGE_ERROR_STATUS.get(exc.reason or "", 422), exc.reason or "bad_input", str(exc))


async def read_photos(uploads: list[UploadFile] | None, core: BotCore) -> tuple[list[bytes], list[str]]:
    """The uploaded photos' bytes and names (decoded later, by the engine's one rule)."""
    settings = core.settings
    if not uploads:
        raise ApiError(422, "no_image", "Send at least one photo in the multipart field 'image'.")
    if len(uploads) > settings.max_images_per_observation:
        raise ApiError(413, "too_many_images", f"Too many photos ({len(uploads)}); send at most "
                       f"{settings.max_images_per_observation} per observation.")
    blobs = []
    for upload in uploads:
        if upload.size is not None and upload.size > settings.max_image_bytes:  # the real size, unread
            raise ApiError(413, "too_many_bytes", too_large(upload.size, settings.max_image_bytes,
                                                            (upload.filename or "")[:MAX_FILENAME_CHARS]))
        blobs.append(await upload.read(settings.max_image_bytes + 1))
    # Client-chosen names are echoed back (in results and errors): keep them short.
    names = [(upload.filename or f"photo {i + 1}")[:MAX_FILENAME_CHARS] for i, upload in enumerate(uploads)]
    return blobs, names


async def through_core(identify, uploads: list[UploadFile], core: BotCore) -> tuple[list[str], list[bytes], Any]:
    """The photos' names and bytes, and what the core's identify (or identify_each) made of them."""
    blobs, names = await read_photos(uploads, core)
    try:
        return names, blobs, await identify(blobs)
    except UserFacingError as exc:
        raise api_error(exc, "model") from None


def count(request: Request, results: list[dict[str, Any]], n_images: int) -> None:
    metrics = request.app.state.metrics
    metrics.images.inc(n_images)
    for result in results:
        metrics.verdicts.labels(str(result.get("verdict"))).inc()
        metrics.count_prediction(result)


router = APIRouter()
protected = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@protected.post("/identify", tags=["vision"])
async def identify(
    request: Request,
    image: list[UploadFile] = File(description="One or more photos of the same mushroom.", min_length=1),
    core: BotCore = Depends(get_core),
) -> dict[str, Any]:
    """Identify one mushroom from one or several photos (one observation).

    Returns the vision CLI's JSON: `top_k` (calibrated probabilities), `verdict`, `abstained`,
    `danger_probability`, `dangerous`, `model_version`, and `notes` on photos that were skipped."""
    names, blobs, (identification, decoded) = await through_core(core.identify, image, core)
    result = identification.to_dict(image=[names[i - 1] for i in decoded.used])
    result.setdefault("model_version", core.model_version)
    result["n_images"] = len(decoded.used)
    result["notes"] = decoded.notes
    result["feedback_token"] = await core._io(core.feedback_token, identification, [blobs[i - 1] for i in decoded.used])
    count(request, [result], len(decoded.used))
    return result


@protected.post("/feedback", tags=["vision"])
async def feedback(
    body: FeedbackRequest, request: Request, core: BotCore = Depends(get_core)
) -> dict[str, Any]:
    """Say whether an identification was right: send back its `feedback_token` with the vote. One vote per
    user and identification (a second one replaces the first). No photo is kept from the API."""
    try:
        recorded = await core.api_feedback(body.user, body.token, body.vote, body.label)
    except UserFacingError as exc:
        raise ApiError(422, exc.reason or "bad_input", str(exc)) from None
    request.app.state.metrics.feedback.labels(str(recorded["model_version"]), recorded["recorded"]).inc()
    return recorded


@protected.post("/forget", tags=["vision"])
async def forget(body: ForgetRequest, core: BotCore = Depends(get_core)) -> dict[str, Any]:
    """Delete everything stored about one of your users (their votes)."""
    return await core.api_forget(body.user)


@protected.post("/identify/each", tags=["vision"])
async def identify_each(
    request: Request,
    image: list[UploadFile] = File(description="Photos, each identified on its own.", min_length=1),
    core: BotCore = Depends(get_core),
) -> dict[str, Any]:
    """Identify each photo separately: `{"results": [...], "model_version": ..., "notes": [...]}`."""
    names, _, (identifications, decoded) = await through_core(core.identify_each, image, core)
    results = [ident.to_dict(image=names[i - 1]) for ident, i in zip(identifications, decoded.used, strict=True)]
    count(request, results, len(decoded.used))
    return {"results": results, "model_version": core.model_version, "notes": decoded.notes}


@protected.post("/ask", tags=["knowledge base"])
async def ask(body: AskRequest, core: BotCore = Depends(get_core)) -> dict[str, Any]:
    """Answer a question from the species catalog and the field guides, with citations."""
    question = clean_text(body.question, MAX_QUESTION_CHARS + 1).strip()  # valid Unicode, no control chars
    # A question of control characters alone is empty once cleaned: the answerer says so kindly (200).
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(422, "question_too_long",
                       f"The question is too long; please keep it under {MAX_QUESTION_CHARS} characters.")
    species = clean_text(body.species or "", 200).strip() or None
    photo = PhotoContext.from_dict(body.photo.model_dump()) if body.photo is not None else None
    try:
        answer = await core.ask(question, species, photo, body.poisoning)
    except UserFacingError as exc:
        raise api_error(exc, "index") from None
    return answer.to_dict()


@protected.get("/info", tags=["service"])
async def info(core: BotCore = Depends(get_core)) -> dict[str, Any]:
    """Model version and labels, index version, and the input limits clients must respect."""
    classifier = core.engine.classifier
    if classifier is None:
        raise api_error(UserFacingError("", "unavailable"), "model")
    settings = core.settings
    return {
        "model_version": classifier.version,
        "labels": list(classifier.labels),
        "index": core.engine.index_info,
        "limits": {
            "max_image_bytes": settings.max_image_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "max_images_per_observation": settings.max_images_per_observation,
            "max_question_chars": MAX_QUESTION_CHARS,
        },
    }


@router.get("/healthz", tags=["service"])
async def healthz(core: BotCore = Depends(get_core)) -> dict[str, str | None]:
    """Liveness: the process answers. Does not wait for the model; names it once loaded (and where it
    came from when it follows a registered model)."""
    return {"status": "ok", "model_version": core.engine.model_version, "model_source": core.engine.model_source}


@router.get("/readyz", tags=["service"], responses={503: {"model": ErrorBody}})
async def readyz(core: BotCore = Depends(get_core)) -> Response:
    """Readiness: 200 once the model and the index are loaded, 503 before."""
    engine = core.engine
    if not engine.ready:
        missing = [name for name, loaded in (("model", engine.classifier is not None),
                                             ("index", engine.index_loaded)) if not loaded]
        reasons = "; ".join(f"{name}: {engine.errors.get(name, 'loading')}" for name in missing)
        return error_response(503, "not_ready", f"Not loaded yet: {reasons}")
    return JSONResponse({"status": "ready", "model_version": engine.model_version,
                         "model_source": engine.model_source, "index_version": engine.index_info.get("version")})


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
async def prometheus_metrics(request: Request, core: BotCore = Depends(get_core)) -> Response:
    """Prometheus metrics (text exposition format)."""
    metrics = request.app.state.metrics
    metrics.publish(core.engine)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


router.include_router(protected)
