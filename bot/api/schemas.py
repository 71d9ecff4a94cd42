"""Request and response bodies of the HTTP API (what /openapi.json documents)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictFloat

MAX_QUESTION_CHARS = 2000


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


class FeedbackRequest(BaseModel):
    token: str = Field(max_length=4000, description="The feedback_token of a /v1/identify response.")
    vote: Literal["right", "wrong", "unsure"]
    label: str | None = Field(default=None, max_length=200,
                              description="What it really is (a species name, or 'unknown'), with a 'wrong' vote.")
    user: str = Field(min_length=1, max_length=200, pattern=r"\S",
                      description="Your own id for the person who voted; stored only as a salted hash.")


class ForgetRequest(BaseModel):
    user: str = Field(min_length=1, max_length=200, pattern=r"\S", description="The id used in /v1/feedback.")


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
