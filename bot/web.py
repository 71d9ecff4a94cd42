"""The web page: the mushroom chat in a browser, one more adapter of the conversation core.

    python -m bot api      then open http://127.0.0.1:8080/

- GET  /                  the page; sets the session cookie (a signed chat id, WEB_SESSION_HOURS long)
- GET  /web/{app.js, style.css}   its script and style (no CDN, no build step)
- POST /web/photo         multipart `image` (repeatable: photos of one mushroom) and optional `caption`
- POST /web/message       {"text": "..."} (a question or a /command) or {"button": "<payload>"}
The two POSTs answer {"replies": [{"text", "buttons": [{"label", "payload"}], "data": {...}}]}, the
core's replies as they are: the same memory, rate limits, first aid and wording as every chat.

Safe by construction: the page's own origin only (SameSite=Strict cookie, a custom request header
that a cross-site form cannot send, Sec-Fetch-Site checked), a Content-Security-Policy that allows
nothing but this origin's script and style, every text put into the DOM as text (app.js never sets
innerHTML), and no API key in the page: the session cookie is what the page holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.api.middleware import ApiError
from bot.api.routes import get_core
from bot.api.schemas import MAX_QUESTION_CHARS
from bot.core import BotCore
from bot.messages import Event, Reply, parse_command, to_plain
from vision_model.images import too_large

STATIC = Path(__file__).resolve().parent / "web_static"
COOKIE = "mushroom_session"
HEADER = "x-mushroom-web"  # sent by app.js; a cross-site form cannot set it, a cross-site fetch needs CORS
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class WebSecurityHeaders:
    """The page's security headers on every response of `/` and `/web/...`, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/" and not path.startswith("/web/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class Sessions:
    """Signed, expiring chat ids: `<chat>.<expires>.<signature>`. The secret is WEB_SESSION_SECRET
    (set it when several replicas serve the page), else one drawn at start (sessions end with the process)."""

    def __init__(self, secret: str | None, hours: float) -> None:
        self.secret = (secret or secrets.token_urlsafe(32)).encode()
        self.seconds = int(hours * 3600)

    def _sign(self, chat: str, expires: int) -> str:
        return hmac.new(self.secret, f"{chat}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def new(self) -> str:
        chat, expires = secrets.token_urlsafe(18), int(time.time()) + self.seconds
        return f"{chat}.{expires}.{self._sign(chat, expires)}"

    def chat_of(self, cookie: str | None) -> str | None:
        """The chat id of a valid, unexpired cookie, else None."""
        try:
            chat, expires, signature = (cookie or "").split(".")
            if int(expires) < time.time():
                return None
        except ValueError:
            return None
        return chat if hmac.compare_digest(signature, self._sign(chat, int(expires))) else None


class WebMessage(BaseModel):
    text: str | None = Field(default=None, max_length=MAX_QUESTION_CHARS)
    button: str | None = Field(default=None, max_length=64)


def chat_of(request: Request) -> str:
    """The session's chat id; refuses requests from another site and expired sessions."""
    if request.headers.get(HEADER) != "1" or request.headers.get("sec-fetch-site", "same-origin") not in (
            "same-origin", "none"):
        raise ApiError(403, "forbidden", "This endpoint serves the page on this site only.")
    chat = request.app.state.sessions.chat_of(request.cookies.get(COOKIE))
    if chat is None:
        raise ApiError(401, "session_expired", "Your session has expired: please reload the page.")
    return chat


def replies_json(replies: list[Reply]) -> dict[str, Any]:
    return {"replies": [{"text": to_plain(r.text), "buttons": [{"label": b.label, "payload": b.payload}
                                                               for b in r.buttons], "data": r.data}
                        for r in replies]}


router = APIRouter(include_in_schema=False)


@router.get("/")
async def page(request: Request) -> FileResponse:
    response = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})
    if request.app.state.sessions.chat_of(request.cookies.get(COOKIE)) is None:
        sessions = request.app.state.sessions
        response.set_cookie(COOKIE, sessions.new(), max_age=sessions.seconds, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
    return response


@router.get("/web/{name}")
async def static(name: str) -> FileResponse:
    if name not in ("app.js", "style.css"):
        raise ApiError(404, "not_found", "Not found.")
    return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


@router.post("/web/photo")
async def photo(
    image: list[UploadFile] = File(default_factory=list),
    caption: str = Form(default="", max_length=MAX_QUESTION_CHARS),
    chat: str = Depends(chat_of),
    core: BotCore = Depends(get_core),
) -> JSONResponse:
    """Photos of one mushroom: the same Event a chat's album makes (too-large ones become notes)."""
    limit, photos, problems = core.settings.max_image_bytes, [], []
    for upload in image:
        if upload.size is not None and upload.size > limit:
            problems.append(too_large(upload.size, limit, (upload.filename or "")[:100]))
        else:
            photos.append(await upload.read(limit + 1))
    event = Event(platform="web", chat_id=chat, user_id=chat, photos=photos, problems=problems, text=caption)
    if not photos and not problems:
        event.problems.append("Please choose at least one photo of the mushroom.")
    return JSONResponse(replies_json(await core.handle(event)))


@router.post("/web/message")
async def message(body: WebMessage, chat: str = Depends(chat_of), core: BotCore = Depends(get_core)) -> JSONResponse:
    """A question, a /command or a button press."""
    if body.button:
        event = Event(platform="web", chat_id=chat, user_id=chat, button=body.button)
    else:
        command, args = parse_command(body.text or "")
        event = Event(platform="web", chat_id=chat, user_id=chat, command=command, args=args,
                      text="" if command else (body.text or ""))
    return JSONResponse(replies_json(await core.handle(event)))
