"""The Discord front door: real discord.py client, Message and Interaction objects over a fake HTTP edge.

Nothing logs in. `HTTPClient.request` (REST), `HTTPClient.get_from_cdn` (attachment downloads) and
`AsyncWebhookAdapter.request` (interaction responses and followups) are replaced by a recorder that
answers with canned Discord JSON; gateway events are fed through the client's ConnectionState
(parse_message_create / parse_interaction_create), as the gateway would.
"""

from __future__ import annotations

import asyncio
import itertools

import discord
import pytest
from bot_support import jpeg, make_core, make_settings, tiny_model
from discord.webhook.async_ import AsyncWebhookAdapter

from bot.discord_adapter import DiscordFrontDoor

BOT = {"id": "123", "username": "mushroom-bot", "discriminator": "0", "avatar": None, "bot": True}
USER = {"id": "777", "username": "alice", "discriminator": "0", "avatar": None}
GUILD, CHANNEL = "4000", "5000"


class FakeDiscord:
    """Records REST and webhook calls as (method, path, payload) and answers with canned JSON."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.cdn: dict[str, bytes] = {}
        self._ids = itertools.count(10_000)

    def message(self, payload: dict | None, channel_id: str = CHANNEL) -> dict:
        payload = payload or {}
        return {"id": str(next(self._ids)), "channel_id": channel_id, "type": 0, "content": payload.get("content", ""),
                "author": BOT, "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
                "pinned": False, "mention_everyone": False, "tts": False, "timestamp": "2026-11-28T04:00:00+00:00",
                "edited_timestamp": None, "flags": 0, "components": payload.get("components", [])}

    async def rest(self, route, *, files=None, form=None, **kwargs):
        payload = kwargs.get("json") or {}
        self.calls.append((route.method, route.url, payload))
        if route.url.endswith("/messages"):
            return self.message(payload)
        return None  # typing and the like

    async def webhook(self, route, session, *, payload=None, multipart=None, **kwargs):
        if multipart and not payload:
            import json

            payload = json.loads(multipart[0]["value"])
        self.calls.append((route.method, route.url, payload or {}))
        if "/callback" in route.url:
            return {"interaction": {"id": "1", "type": 2, "response_message_loading": True}}
        return self.message(payload)

    async def get_from_cdn(self, url):
        return self.cdn[url]

    def sent_texts(self) -> list[str]:
        return [p.get("content", "") for method, url, p in self.calls
                if method in ("POST", "PATCH") and "/callback" not in url and p.get("content")]


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("dc-models")), "amanita_phalloides")


@pytest.fixture
async def discord_bot(tmp_path, deadly_model, monkeypatch):
    fake = FakeDiscord()
    monkeypatch.setattr(discord.http.HTTPClient, "request", fake.rest)
    monkeypatch.setattr(discord.http.HTTPClient, "get_from_cdn", fake.get_from_cdn)
    monkeypatch.setattr(AsyncWebhookAdapter, "request", fake.webhook)
    settings = make_settings(tmp_path)
    door = DiscordFrontDoor(make_core(settings, deadly_model), settings)
    client = door.client
    await client._async_setup_hook()  # what login() does first: bind the running loop
    state = client._connection
    state.user = discord.ClientUser(state=state, data=BOT)
    state.application_id = 123
    await door._setup_hook()
    yield door, fake, state
    door._health_task.cancel()
    door.core.close()


async def settle(fake: FakeDiscord, count: int, timeout: float = 15.0) -> list[str]:
    """Wait until the bot has sent `count` messages (events run as tasks, like on the gateway)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(fake.sent_texts()) < count and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)
    return fake.sent_texts()


def attachment(fake: FakeDiscord, name: str, data: bytes, content_type: str = "image/jpeg") -> dict:
    url = f"https://cdn.discordapp.com/attachments/{CHANNEL}/1/{name}"
    fake.cdn[url] = data
    return {"id": str(next(fake._ids)), "filename": name, "size": len(data), "url": url, "proxy_url": url,
            "content_type": content_type}


def guild_message(content: str, attachments=(), mention_bot=True) -> dict:
    return {"id": "42", "channel_id": CHANNEL, "guild_id": GUILD, "type": 0, "content": content,
            "author": USER, "attachments": list(attachments), "embeds": [],
            "mentions": [BOT] if mention_bot else [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": False, "timestamp": "2026-11-28T04:00:00+00:00",
            "edited_timestamp": None, "flags": 0, "components": []}


def interaction(kind: int, data: dict, message: dict | None = None) -> dict:
    payload = {"id": str(900 + kind), "application_id": "123", "type": kind, "token": "tok", "version": 1,
               "channel_id": CHANNEL, "channel": {"id": CHANNEL, "type": 1}, "user": USER, "data": data,
               "locale": "en-US", "app_permissions": "0", "entitlements": [], "authorizing_integration_owners": {},
               "attachment_size_limit": 10_485_760}
    if message is not None:
        payload["message"] = message
    return payload


async def test_mention_with_an_attachment_is_identified(discord_bot):
    door, fake, state = discord_bot
    photo = attachment(fake, "cap.jpg", jpeg())
    state.parse_message_create(guild_message("<@123> what is this?", [photo]))
    [reply] = await settle(fake, 1)
    assert "Amanita phalloides" in reply and "**DEADLY - can kill**" in reply
    assert len(reply) <= 2000
    method, url, payload = next(c for c in fake.calls if c[2].get("content") == reply)
    assert url.endswith(f"/channels/{CHANNEL}/messages")
    assert str(payload["message_reference"]["message_id"]) == "42"  # a reply to the user's message
    labels = [c["label"] for row in payload["components"] for c in row["components"]]
    assert labels == ["More", "Is it poisonous?", "Lookalikes", "Sources"]


async def test_messages_without_a_mention_are_ignored_and_files_refused(discord_bot):
    door, fake, state = discord_bot
    state.parse_message_create(guild_message("hello everyone", mention_bot=False))
    pdf = attachment(fake, "guide.pdf", b"%PDF-1.4", content_type="application/pdf")
    state.parse_message_create(guild_message("<@123>", [pdf]))
    [reply] = await settle(fake, 1)
    assert "guide.pdf" in reply and "isn't a photo" in reply


async def test_ask_command_is_deferred_then_answered(discord_bot):
    door, fake, state = discord_bot
    state.parse_interaction_create(interaction(2, {
        "id": "1", "name": "ask", "type": 1,
        "options": [{"name": "question", "type": 3, "value": "is the death cap deadly?"}],
    }))
    [answer] = await settle(fake, 1)
    callback = next(p for m, url, p in fake.calls if "/callback" in url)
    assert callback["type"] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking..."
    assert "Amanita phalloides" in answer and "DEADLY" in answer
    followup = [url for m, url, p in fake.calls if p.get("content") == answer]
    assert followup and "/webhooks/123/tok" in followup[0]


async def press_under_a_photo_reply(fake, state, label: str) -> list[str]:
    """Send a photo by mention, press the reply's button `label`; the texts sent so far."""
    state.parse_message_create(guild_message("<@123>", [attachment(fake, "a.jpg", jpeg())]))
    await settle(fake, 1)
    _, _, payload = next(c for c in fake.calls if c[2].get("components"))
    button = next(c for c in payload["components"][0]["components"] if c["label"] == label)
    state.parse_interaction_create(interaction(3, {"custom_id": button["custom_id"], "component_type": 2},
                                               fake.message(payload)))
    return await settle(fake, 2)


async def test_button_press_reaches_the_core(discord_bot):
    door, fake, state = discord_bot
    texts = await press_under_a_photo_reply(fake, state, "Lookalikes")
    assert "Lookalikes of Amanita phalloides" in texts[-1]


async def test_a_poisoning_by_mention_gets_first_aid_first(discord_bot):
    door, fake, state = discord_bot
    state.parse_message_create(guild_message("<@123> mi hijo se comió una seta del jardín, qué hago?"))
    [reply] = await settle(fake, 1)
    assert reply.startswith("⚠️ Posible intoxicación: llame YA al 112")


async def test_more_button_gives_the_rest_of_the_answer(discord_bot):
    door, fake, state = discord_bot
    texts = await press_under_a_photo_reply(fake, state, "More")
    assert "Check in the field" in texts[-1] and "volva" in texts[-1].lower()


async def test_the_health_file_follows_the_gateway_connection(discord_bot, monkeypatch):
    """The liveness probe's input: touched while connected, left to go stale when not."""
    import subprocess
    import sys
    from pathlib import Path

    door, fake, state = discord_bot
    health = Path(door.settings.discord_health_file)
    probe = [sys.executable, str(Path(__file__).resolve().parent.parent / "docker" / "healthcheck.py"),
             "--file", str(health), "--max-age", "60"]
    monkeypatch.setattr(door.client, "is_ready", lambda: False)
    assert not door.mark_alive_if_connected() and not health.exists()
    assert subprocess.run(probe, capture_output=True).returncode == 1  # never connected: unhealthy
    monkeypatch.setattr(door.client, "is_ready", lambda: True)
    monkeypatch.setattr(type(door.client), "latency", property(lambda self: 0.08))
    assert door.mark_alive_if_connected() and health.exists()
    assert subprocess.run(probe, capture_output=True).returncode == 0
    import os
    import time

    os.utime(health, (time.time() - 600, time.time() - 600))  # the gateway dropped ten minutes ago
    monkeypatch.setattr(type(door.client), "latency", property(lambda self: float("inf")))
    assert not door.mark_alive_if_connected()
    assert subprocess.run(probe, capture_output=True).returncode == 1
