"""The neutral conversation model: events in, replies out.

Adapters (Telegram, Discord, console, HTTP) translate their platform's updates into an
`Event` and render each `Reply`; the core never sees a platform object.

Reply text uses a tiny markup that every front door can render:
    **bold**      -> <b>bold</b> (Telegram HTML), **bold** (Discord), bold (console)
Everything else is plain text; adapters escape it for their platform.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from knowledge_base.language import clean_text

BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


@dataclass(frozen=True)
class Button:
    label: str
    payload: str  # opaque to adapters; the core parses it back (<= 64 bytes for Telegram)


@dataclass
class Reply:
    text: str
    buttons: list[Button] = field(default_factory=list)
    # Structured content for front doors that draw it (the web page's bars, badge and citations):
    # {"identification": replies.identification_card(...)} or {"citations": [...]}. Text-only doors
    # ignore it: the text says the same.
    data: dict = field(default_factory=dict)


# A channel for messages sent later (progress of a background job). Adapters supply it.
SendLater = Callable[[Reply], Awaitable[None]]


@dataclass
class Event:
    """One thing a user did. Exactly one of photos / command / button / text is the main content."""

    platform: str
    chat_id: str
    user_id: str
    text: str = ""  # a plain message, or a caption
    command: str | None = None  # "identify", "ask", ... (no slash, lower case)
    args: str = ""  # the text after the command
    photos: list[bytes] = field(default_factory=list)  # several photos = ONE observation
    button: str | None = None  # the payload of a pressed button
    unsupported: str | None = None  # a sticker, a PDF...: a short description for the reply
    # Friendly sentences about attachments the adapter could not fetch (too large, download failed).
    problems: list[str] = field(default_factory=list)
    is_admin: bool = False
    send_later: SendLater | None = None

    def __post_init__(self) -> None:
        # Text from a platform is cleaned here, once, for the whole core (invalid Unicode, control
        # characters, length): nothing downstream can fail on what a user typed.
        self.chat_id = clean_text(self.chat_id, 128)
        self.user_id = clean_text(self.user_id, 128)
        self.text = clean_text(self.text)
        self.args = clean_text(self.args)
        self.button = clean_text(self.button, 64) if self.button is not None else None
        if self.command:
            self.command = clean_text(self.command, 64).lower().lstrip("/")

    @property
    def kind(self) -> str:
        """Short label for logs: photo, command, button, unsupported, text."""
        if self.photos:
            return "photo"
        if self.command:
            return "command"
        if self.button:
            return "button"
        if self.unsupported or self.problems:
            return "unsupported"
        return "text"


def parse_command(text: str) -> tuple[str | None, str]:
    """'/ask@MyBot is it edible?' -> ('ask', 'is it edible?'); plain text -> (None, text)."""
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None, stripped
    head, _, rest = stripped.partition(" ")
    name = head[1:].split("@", 1)[0].lower()
    if not name or not re.fullmatch(r"[a-z0-9_]+", name):
        return None, stripped
    return name, rest.strip()


# --- rendering --------------------------------------------------------------------------

def to_telegram_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", escaped)


def to_discord_markdown(text: str) -> str:
    # Our markup already is Discord markdown; escape the characters users might have typed
    # (a species question echoed back) other than our own ** pairs.
    parts = BOLD.split(text)
    out = []
    for i, part in enumerate(parts):
        safe = re.sub(r"([_~`|>])", r"\\\1", part)
        out.append(f"**{safe}**" if i % 2 else safe)
    return "".join(out)


def to_plain(text: str) -> str:
    return BOLD.sub(lambda m: m.group(1), text)


def buttons_hint(buttons: list[Button]) -> str:
    return "[buttons: " + " | ".join(b.label for b in buttons) + "]" if buttons else ""


def split_text(text: str, limit: int) -> list[str]:
    """Split a long reply at paragraph/line boundaries so each part fits a platform's limit."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single enormous line: hard cut
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current:
        parts.append(current)
    return parts
