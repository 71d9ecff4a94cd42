"""The Discord front door: real discord.py client, Message and Interaction objects over a fake HTTP edge.

Nothing logs in. `HTTPClient.request` (REST), `HTTPClient.get_from_cdn` (attachment downloads) and
`AsyncWebhookAdapter.request` (interaction responses and followups) are replaced by a recorder that
answers with canned Discord JSON (bot_support.FakeDiscord); gateway events are fed through the
client's ConnectionState (parse_message_create / parse_interaction_create), as the gateway would.
"""

from __future__ import annotations

import discord
import pytest
from bot_support import (
    FakeDiscord,
    assert_no_raw_user_id,
    guild_message,
    interaction,
    jpeg,
    make_core,
    make_settings,
    tiny_model,
)

from bot.discord_adapter import DiscordFrontDoor


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("dc-models")), "amanita_phalloides")


@pytest.fixture
async def discord_bot(tmp_path, deadly_model, monkeypatch):
    fake = FakeDiscord().install(monkeypatch)
    settings = make_settings(tmp_path)
    door = DiscordFrontDoor(make_core(settings, deadly_model), settings)
    client = door.client
    await client._async_setup_hook()  # what login() does first: bind the running loop
    state = client._connection
    state.user = discord.ClientUser(state=state, data=FakeDiscord.BOT)
    state.application_id = 123
    await door._setup_hook()
    yield door, fake, state
    door._health_task.cancel()
    door.core.close()


async def test_mention_with_an_attachment_is_identified(discord_bot):
    door, fake, state = discord_bot
    photo = fake.attachment("cap.jpg", jpeg())
    state.parse_message_create(guild_message("<@123> what is this?", [photo]))
    [reply] = await fake.settle(1)
    assert "Amanita phalloides" in reply and "**DEADLY - can kill**" in reply
    assert len(reply) <= 2000
    method, url, payload = next(c for c in fake.calls if c[2].get("content") == reply)
    assert url.endswith(f"/channels/{FakeDiscord.CHANNEL}/messages")
    assert str(payload["message_reference"]["message_id"]) == "42"  # a reply to the user's message
    labels = [c["label"] for row in payload["components"] for c in row["components"]]
    assert labels == ["More", "Is it poisonous?", "Lookalikes", "Sources", "Right", "Wrong", "Not sure"]


async def test_messages_without_a_mention_are_ignored_and_files_refused(discord_bot):
    door, fake, state = discord_bot
    state.parse_message_create(guild_message("hello everyone", mention_bot=False))
    pdf = fake.attachment("guide.pdf", b"%PDF-1.4", content_type="application/pdf")
    state.parse_message_create(guild_message("<@123>", [pdf]))
    [reply] = await fake.settle(1)
    assert "guide.pdf" in reply and "isn't a photo" in reply


async def test_ask_command_is_deferred_then_answered(discord_bot):
    door, fake, state = discord_bot
    state.parse_interaction_create(interaction(2, {
        "id": "1", "name": "ask", "type": 1,
        "options": [{"name": "question", "type": 3, "value": "is the death cap deadly?"}],
    }))
    [answer] = await fake.settle(1)
    callback = next(p for m, url, p in fake.calls if "/callback" in url)
    assert callback["type"] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking..."
    assert "Amanita phalloides" in answer and "DEADLY" in answer
    followup = [url for m, url, p in fake.calls if p.get("content") == answer]
    assert followup and "/webhooks/123/tok" in followup[0]


async def press_under_a_photo_reply(fake, state, label: str) -> list[str]:
    """Send a photo by mention, press the reply's button `label`; the texts sent so far."""
    state.parse_message_create(guild_message("<@123>", [fake.attachment("a.jpg", jpeg())]))
    await fake.settle(1)
    _, _, payload = next(c for c in fake.calls if c[2].get("components"))
    button = next(c for row in payload["components"] for c in row["components"] if c["label"] == label)
    state.parse_interaction_create(interaction(3, {"custom_id": button["custom_id"], "component_type": 2},
                                               fake.message(payload)))
    return await fake.settle(2)


async def test_button_press_reaches_the_core(discord_bot):
    door, fake, state = discord_bot
    texts = await press_under_a_photo_reply(fake, state, "Lookalikes")
    assert "Lookalikes of Amanita phalloides" in texts[-1]


async def test_a_poisoning_by_mention_gets_first_aid_first(discord_bot):
    door, fake, state = discord_bot
    state.parse_message_create(guild_message("<@123> mi hijo se comió una seta del jardín, qué hago?"))
    [reply] = await fake.settle(1)
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


async def test_feedback_buttons_and_commands_record_votes_with_the_model_version(discord_bot, tmp_path):
    """Right / Wrong / Not sure on a row of their own; the vote is stored under a salted user hash (issue 27)."""
    from sqlalchemy import create_engine, text

    door, fake, state = discord_bot
    texts = await press_under_a_photo_reply(fake, state, "Not sure")
    _, _, payload = next(c for c in fake.calls if c[2].get("components"))
    assert [c["label"] for c in payload["components"][1]["components"]] == ["Right", "Wrong", "Not sure"]
    assert "noted that you are not sure about it" in texts[-1] and "/consent on" in texts[-1]
    with create_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}").connect() as conn:
        [vote] = conn.execute(text("SELECT * FROM bot_feedback")).mappings().all()
    assert vote["vote"] == "unsure" and vote["model_version"] and vote["platform"] == "discord"
    assert_no_raw_user_id(vote, FakeDiscord.USER["id"])  # a salted hash, never the user id
    assert {"correct", "consent", "forget"} <= {c.name for c in door.tree.get_commands()}
