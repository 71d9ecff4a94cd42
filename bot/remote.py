"""Remote inference: the Classifier and Answerer interfaces, served by the HTTP API (bot.api).

When INFERENCE_URL is set, bots build these instead of loading the model and the index
themselves, so a bot process stays small (no torch in memory) and the inference replicas
scale on their own:

    classifier = RemoteClassifier.from_settings(settings)
    classifier.identify([photo_bytes])        # -> vision_model.classifier.Identification
    answerer = RemoteAnswerer.from_settings(settings)
    answerer.ask("Is it edible?", "amanita_muscaria")   # -> knowledge_base.answer.Answer

Errors keep the local meaning: a photo the API refuses raises `vision_model.images.ImageError`
with the API's friendly sentence; an unreachable, failing or still-loading service raises
`RemoteError`, whose message can be shown to users as it is.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bot.settings import Settings, get_settings

DEFAULT_TIMEOUT_S = 60.0
# Photos the caller hands over as PIL images are sent losslessly (PNG) up to this size, so the
# remote result matches the local one exactly; bigger ones go as high-quality JPEG, which keeps
# a 40-megapixel photo under the API's 10 MB limit (a PNG of it would not be).
LOSSLESS_MAX_PIXELS = 1_000_000
JPEG_QUALITIES = (95, 85, 75)
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
# Error codes from the API that are about the photo itself (-> ImageError for the user).
PHOTO_ERRORS = {
    "not_an_image", "corrupt", "empty", "unreadable", "not_found", "too_many_bytes", "too_many_pixels",
    "too_many_images", "no_image", "request_too_large",
}


class RemoteError(RuntimeError):
    """The inference service could not answer. `str(error)` is a friendly sentence."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class _RemoteService:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        """`client`: an httpx.Client to send through (tests pass FastAPI's TestClient)."""
        self._base_url = base_url.rstrip("/")
        self._headers = {"X-API-Key": api_key} if api_key else {}
        # retries=2: reconnect after a dropped connection (e.g. a replica restarting); a request
        # that reached the server is never sent twice.
        self._client = client or httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(retries=2))

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any):
        settings = settings or get_settings()
        base_url = settings.require("inference_url")
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(base_url, api_key, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, self._base_url + path, headers=self._headers, **kwargs)
        except httpx.TimeoutException:
            raise RemoteError("The identification service took too long to answer. Please try again.") from None
        except httpx.HTTPError as error:
            raise RemoteError(
                "I can't reach the identification service right now. Please try again in a minute."
            ) from error
        if response.is_success:
            return response.json()
        self._raise_for(response)

    def _raise_for(self, response: httpx.Response) -> None:
        try:
            body = response.json()
            code, detail = str(body.get("error")), str(body.get("detail"))
        except (ValueError, AttributeError):
            code, detail = "http_error", response.text[:200]
        status = response.status_code
        if code in PHOTO_ERRORS:
            from vision_model.images import ImageError

            raise ImageError(detail, reason=code)
        if status == 401:
            message = "The identification service refused our API key (check API_KEY on both sides)."
        elif status == 503:
            message = "The identification service is still starting up. Please try again in a minute."
        elif 400 <= status < 500:
            message = detail  # the API's own friendly sentence (e.g. an empty question)
        else:
            message = "The identification service had a problem. Please try again later."
        raise RemoteError(message, status=status, code=code)


class RemoteClassifier(_RemoteService):
    """`vision_model.classifier.Classifier`, over HTTP (POST /v1/identify[/each])."""

    _info: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str]:
        return list(self._model_info()["labels"])

    @property
    def version(self) -> str:
        """The served model's version; "unavailable" while the service cannot be reached (a
        status line should not fail because the API is restarting)."""
        try:
            return str(self._model_info()["model_version"])
        except RemoteError:
            return "unavailable"

    def _model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self._request("GET", "/v1/info")
        return self._info

    def identify(self, images: Sequence[Any]):
        """One observation (several photos of the same mushroom) -> one Identification."""
        result = self._request("POST", "/v1/identify", files=_multipart(images))
        return identification_from_dict(result)

    def identify_each(self, images: Sequence[Any]) -> list:
        """One Identification per photo."""
        result = self._request("POST", "/v1/identify/each", files=_multipart(images))
        return [identification_from_dict(item) for item in result["results"]]


class RemoteAnswerer(_RemoteService):
    """`knowledge_base.answer.Answerer`, over HTTP (POST /v1/ask)."""

    def ask(self, question: str, species: str | None = None, photo=None, poisoning: bool = False):
        body = {"question": question, "species": species, "poisoning": poisoning,
                "photo": photo.to_dict() if photo is not None else None}
        result = self._request("POST", "/v1/ask", json=body)
        return answer_from_dict(result)


# --- wire format <-> the packages' dataclasses --------------------------------------------


def _multipart(images: Sequence[Any]) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i, image in enumerate(images):
        name, data = _photo_bytes(image, i)
        files.append(("image", (name, data, "application/octet-stream")))
    return files


def _photo_bytes(image: Any, index: int) -> tuple[str, bytes]:
    if isinstance(image, bytes | bytearray | memoryview):
        return f"photo{index + 1}", bytes(image)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            return path.name, path.read_bytes()
        except OSError:
            from vision_model.images import ImageError

            raise ImageError(f"I couldn't open the photo '{path.name}'.", reason="not_found") from None
    if hasattr(image, "read"):
        return f"photo{index + 1}", image.read()
    # A PIL image: re-encode it.
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if rgb.width * rgb.height <= LOSSLESS_MAX_PIXELS:
        rgb.save(buffer, format="PNG")
        return f"photo{index + 1}.png", buffer.getvalue()
    for quality in JPEG_QUALITIES:
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= MAX_UPLOAD_BYTES:
            break
    return f"photo{index + 1}.jpg", buffer.getvalue()


def _build(cls: type, data: dict[str, Any], **overrides: Any):
    """A dataclass from the JSON fields it declares (extra keys such as "image" are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    values.update({k: v for k, v in overrides.items() if k in names})
    return cls(**values)


def identification_from_dict(data: dict[str, Any]):
    from vision_model.classifier import Identification, Prediction

    top_k = [_build(Prediction, item) for item in data.get("top_k", [])]
    dangerous = [_build(Prediction, item) for item in data.get("dangerous", [])]
    return _build(Identification, data, top_k=top_k, dangerous=dangerous, n_images=int(data.get("n_images", 1)))


def answer_from_dict(data: dict[str, Any]):
    from knowledge_base.answer_types import Answer, Citation

    citations = [_build(Citation, item) for item in data.get("citations", [])]
    return _build(Answer, data, citations=citations)
