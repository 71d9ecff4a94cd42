"""Shared material for the bot tests: tiny real models, photos made in the test, a core factory,
and the fake network edges of the Telegram and Discord front doors.

The classifier is a real `vision_model.classifier.Classifier` over tiny random-weight model
directories (make_tiny_model_dir); answers come from the real `Answerer` in catalog-only mode
(no index needed); chat memory is a real SQLite file in the test's tmp_path. FakeTelegram and
FakeDiscord stand in for the Bot API and Discord's REST/webhook/CDN endpoints only: the libraries'
own Application, client, Message and Interaction objects run for real on top of them.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import struct
import zlib
from functools import cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import discord  # noqa: E402
from discord.webhook.async_ import AsyncWebhookAdapter  # noqa: E402
from PIL import Image  # noqa: E402
from telegram.request import BaseRequest  # noqa: E402

from bot.core import BotCore  # noqa: E402
from bot.settings import Settings  # noqa: E402


def jpeg(color=(120, 80, 40), size=(96, 96)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def bomb_png(width=30_000, height=30_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 16)  # only a few rows: never decoded anyway
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@cache
def tiny_model(root: str, favour: str | None, unknown_labels: bool = False, always_abstain: bool = False) -> Path:
    """A tiny model favouring one label (every photo -> that label), cached per test session.

    unknown_labels: labels the catalog lacks (verdict "unknown"); always_abstain: a safety.json
    whose confidence bar no photo reaches (abstained=True).
    """
    from vision_model.testing import make_tiny_model_dir
    from vision_model.verdict import SafetyConfig

    name = "unknown" if unknown_labels else "abstain" if always_abstain else (favour or "random")
    labels = ["xylaria_notinthecatalog", "mycena_notinthecatalog"] if unknown_labels else None
    safety = SafetyConfig(version="tiny-test", abstain_min_probability=1.0, danger_threshold=1.0) \
        if always_abstain else None
    return make_tiny_model_dir(Path(root) / name, labels=labels, favour=favour, safety=safety)


@cache
def load_classifier(model_dir: str):
    from vision_model.classifier import Classifier

    return Classifier.load(model_dir, backend="torch")


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "CHROMA_PATH": str(tmp_path / "chroma"),
        "GUIDES_DIR": str(tmp_path / "guides"),
        "DISCORD_HEALTH_FILE": str(tmp_path / "discord-alive"),
        "FEEDBACK_PHOTOS": str(tmp_path / "feedback-photos"),
        "TELEGRAM_ADMIN_IDS": "1001",  # FakeTelegram.ADMIN
        "DISCORD_ADMIN_IDS": "2001",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return Settings(**values)


def make_core(settings: Settings, model_dir: Path, **kwargs) -> BotCore:
    from knowledge_base.answer import Answerer
    from knowledge_base.catalog import default_catalog

    kwargs.setdefault("classifier", load_classifier(str(model_dir)))
    kwargs.setdefault("answerer", Answerer(None, default_catalog()))  # catalog-only: no index needed
    return BotCore(settings, **kwargs)


# --- Telegram -------------------------------------------------------------------------------------------------


class FakeTelegram(BaseRequest):
    """The Bot API behind python-telegram-bot: records every call, answers like the Bot API would."""

    TOKEN = "123:ABC"
    ADMIN, USER = 1001, 2002  # ADMIN is in make_settings' TELEGRAM_ADMIN_IDS
    BOT_USER = {"id": 123, "is_bot": True, "first_name": "MushroomBot", "username": "mushroom_test_bot"}

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {}
        self._ids = itertools.count(500)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def do_request(self, url, method, request_data=None, read_timeout=None, write_timeout=None,
                         connect_timeout=None, pool_timeout=None):
        if "/file/bot" in url:  # a file download
            return 200, self.files[url.rsplit("/", 1)[-1]]
        name = url.rsplit("/", 1)[-1]
        params = request_data.parameters if request_data else {}
        self.calls.append((name, params))
        return 200, json.dumps({"ok": True, "result": self._result(name, params)}).encode()

    def _result(self, name: str, params: dict):
        if name == "getMe":
            return self.BOT_USER
        if name == "sendMessage":
            return {"message_id": next(self._ids), "date": 0, "chat": {"id": int(params["chat_id"]), "type": "private"},
                    "from": self.BOT_USER, "text": params.get("text", "")}
        if name == "getFile":
            return {"file_id": params["file_id"], "file_unique_id": params["file_id"],
                    "file_size": len(self.files[params["file_id"]]), "file_path": f"photos/{params['file_id']}"}
        return True  # sendChatAction, answerCallbackQuery, setMyCommands...

    def sent(self, name: str = "sendMessage") -> list[dict]:
        return [params for call, params in self.calls if call == name]

    def photo(self, file_id: str, data: bytes, size: int | None = None) -> dict:
        """The `photo` field of a message carrying `data` (downloadable from this fake as `file_id`)."""
        self.files[file_id] = data
        return {"photo": [{"file_id": file_id, "file_unique_id": file_id, "width": 96, "height": 96,
                           "file_size": size or len(data)}]}

    @classmethod
    def chat(cls, user: int | None = None) -> tuple[dict, dict]:
        """The private chat with `user` (default USER), and `user` as a sender, as Bot API JSON."""
        user = cls.USER if user is None else user
        return {"id": user, "type": "private"}, {"id": user, "is_bot": False, "first_name": "Alice"}

    @classmethod
    def message_update(cls, update_id: int, message_id: int, user: int | None = None, **fields) -> dict:
        """An update: a message from `user` in its private chat with the bot; `fields`: text, photo..."""
        chat, sender = cls.chat(user)
        return {"update_id": update_id,
                "message": {"message_id": message_id, "date": 0, "chat": chat, "from": sender, **fields}}


# --- Discord --------------------------------------------------------------------------------------------------


class FakeDiscord:
    """Records REST and webhook calls as (method, path, payload) and answers with canned JSON."""

    BOT = {"id": "123", "username": "mushroom-bot", "discriminator": "0", "avatar": None, "bot": True}
    USER = {"id": "777", "username": "alice", "discriminator": "0", "avatar": None}
    GUILD, CHANNEL = "4000", "5000"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.cdn: dict[str, bytes] = {}
        self._ids = itertools.count(10_000)

    def install(self, monkeypatch) -> FakeDiscord:
        """Put this fake behind discord.py's HTTP client and webhook adapter for the test."""
        monkeypatch.setattr(discord.http.HTTPClient, "request", self.rest)
        monkeypatch.setattr(discord.http.HTTPClient, "get_from_cdn", self.get_from_cdn)
        monkeypatch.setattr(AsyncWebhookAdapter, "request", self.webhook)
        return self

    def message(self, payload: dict | None, channel_id: str = CHANNEL) -> dict:
        """The message the bot's request `payload` creates, as Discord returns it."""
        payload = payload or {}
        return discord_message(str(next(self._ids)), payload.get("content", ""), self.BOT,
                               channel_id=channel_id, components=payload.get("components", []))

    async def rest(self, route, *, files=None, form=None, **kwargs):
        payload = kwargs.get("json") or {}
        self.calls.append((route.method, route.url, payload))
        if route.url.endswith("/messages"):
            return self.message(payload)
        return None  # typing and the like

    async def webhook(self, route, session, *, payload=None, multipart=None, **kwargs):
        if multipart and not payload:
            payload = json.loads(multipart[0]["value"])
        self.calls.append((route.method, route.url, payload or {}))
        if "/callback" in route.url:
            return {"interaction": {"id": "1", "type": 2, "response_message_loading": True}}
        return self.message(payload)

    async def get_from_cdn(self, url):
        return self.cdn[url]

    def attachment(self, name: str, data: bytes, content_type: str = "image/jpeg") -> dict:
        """An attachment whose file `data` this fake's CDN serves."""
        url = f"https://cdn.discordapp.com/attachments/{self.CHANNEL}/1/{name}"
        self.cdn[url] = data
        return {"id": str(next(self._ids)), "filename": name, "size": len(data), "url": url, "proxy_url": url,
                "content_type": content_type}

    def sent_texts(self) -> list[str]:
        return [p.get("content", "") for method, url, p in self.calls
                if method in ("POST", "PATCH") and "/callback" not in url and p.get("content")]

    async def settle(self, count: int, timeout: float = 15.0) -> list[str]:
        """Wait until the bot has sent `count` messages (events run as tasks, like on the gateway)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.sent_texts()) < count and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        return self.sent_texts()


def discord_message(message_id: str, content: str, author: dict, *, channel_id: str = FakeDiscord.CHANNEL,
                    attachments=(), mentions=(), components=(), **extra) -> dict:
    """A Discord message object (gateway MESSAGE_CREATE or REST reply JSON)."""
    return {"id": message_id, "channel_id": channel_id, "type": 0, "content": content, "author": author,
            "attachments": list(attachments), "embeds": [], "mentions": list(mentions), "mention_roles": [],
            "pinned": False, "mention_everyone": False, "tts": False, "timestamp": "2026-11-28T04:00:00+00:00",
            "edited_timestamp": None, "flags": 0, "components": list(components), **extra}


def guild_message(content: str, attachments=(), mention_bot=True) -> dict:
    """Message 42 from FakeDiscord.USER in the guild's channel, mentioning the bot unless told not to."""
    return discord_message("42", content, FakeDiscord.USER, attachments=attachments,
                           mentions=[FakeDiscord.BOT] if mention_bot else [], guild_id=FakeDiscord.GUILD)


def interaction(kind: int, data: dict, message: dict | None = None) -> dict:
    """A slash command (kind 2) or component (kind 3) interaction from FakeDiscord.USER, in a DM."""
    channel = FakeDiscord.CHANNEL
    payload = {"id": str(900 + kind), "application_id": "123", "type": kind, "token": "tok", "version": 1,
               "channel_id": channel, "channel": {"id": channel, "type": 1}, "user": FakeDiscord.USER, "data": data,
               "locale": "en-US", "app_permissions": "0", "entitlements": [], "authorizing_integration_owners": {},
               "attachment_size_limit": 10_485_760}
    if message is not None:
        payload["message"] = message
    return payload


def assert_no_raw_user_id(row: dict, user_id: object) -> None:
    """A stored feedback row names its user by a salted hash only: no value is the id, and the id appears
    nowhere outside a hex digest (where a few digits occur by chance, e.g. '777' inside a SHA-256)."""
    import json
    import re

    stored = re.sub(r"[0-9a-f]{32,}", "", json.dumps(dict(row), default=str))
    assert str(user_id) not in stored, stored
    assert all(str(value) != str(user_id) for value in dict(row).values())
