"""Discord front door options: DISCORD_SHARDED picks the client class, and slash-command sync only on request.

The fake HTTP edge is test_bot_discord.py's (bot_support.FakeDiscord). The client starts through the
real `Client.login` (GET /users/@me and /oauth2/applications/@me answered by the fake, then the front
door's setup hook), which is the start path of `client.run` up to the gateway connection; no gateway
is opened.
"""

from __future__ import annotations

import discord
import pytest
from bot_support import FakeDiscord, guild_message, jpeg, make_core, make_settings, tiny_model
from discord import app_commands

from bot.discord_adapter import DiscordFrontDoor

APPLICATION = {"id": FakeDiscord.BOT["id"], "name": "mushroom-bot", "description": "", "icon": None,
               "bot_public": False, "bot_require_code_grant": False, "owner": FakeDiscord.USER,
               "verify_key": "0" * 64, "flags": 0}


class FakeDiscordLogin(FakeDiscord):
    """Also answers the two REST calls that `Client.login` makes."""

    async def rest(self, route, *, files=None, form=None, **kwargs):
        if route.method == "GET" and route.url.endswith("/users/@me"):
            self.calls.append((route.method, route.url, {}))
            return self.BOT
        if route.method == "GET" and route.url.endswith("/oauth2/applications/@me"):
            self.calls.append((route.method, route.url, {}))
            return APPLICATION
        return await super().rest(route, files=files, form=form, **kwargs)


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("dc-shard-models")), "amanita_phalloides")


@pytest.fixture
def fake(monkeypatch):
    return FakeDiscordLogin().install(monkeypatch)


@pytest.fixture
def tree_syncs(monkeypatch):
    """Records calls of CommandTree.sync (the real one would PUT the command list to Discord)."""
    calls = []

    async def sync(self, *, guild=None):
        calls.append(guild)
        return []

    monkeypatch.setattr(app_commands.CommandTree, "sync", sync)
    return calls


@pytest.fixture
async def start(tmp_path, deadly_model, fake):
    """start(sharded=..., sync=...) -> a front door logged in over the fake; closed after the test."""
    doors = []

    async def start(*, sharded: bool | None = None, sync: bool = False) -> DiscordFrontDoor:
        overrides = {} if sharded is None else {"DISCORD_SHARDED": "true" if sharded else "false"}
        settings = make_settings(tmp_path, **overrides)
        door = DiscordFrontDoor(make_core(settings, deadly_model), settings, sync=sync)
        doors.append(door)
        await door.client.login("fake-token")
        return door

    yield start
    for door in doors:
        await door.client.close()  # closes the aiohttp session that login opened
        door.core.close()


@pytest.mark.parametrize(("sharded", "expected"), [(None, discord.Client), (False, discord.Client),
                                                    (True, discord.AutoShardedClient)])
async def test_sharded_setting_picks_the_client_class(start, tree_syncs, sharded, expected):
    door = await start(sharded=sharded)
    assert type(door.client) is expected
    assert door.client.user is not None and door.client.user.id == int(FakeDiscord.BOT["id"])  # login went through


@pytest.mark.parametrize("sharded", [False, True])
async def test_command_tree_is_synced_only_when_asked(start, tree_syncs, fake, sharded):
    await start(sharded=sharded)
    assert tree_syncs == []
    assert not [c for c in fake.calls if "/commands" in c[1]]  # nothing pushed to Discord either

    door = await start(sharded=sharded, sync=True)
    assert tree_syncs == [None]  # one global sync, from the setup hook
    assert door.tree.client is door.client


async def test_sharded_client_hands_a_mention_with_a_photo_to_the_core(start, tree_syncs, fake):
    door = await start(sharded=True)
    state = door.client._connection
    assert isinstance(state, discord.state.AutoShardedConnectionState)
    state.parse_message_create(guild_message("<@123> what is this?", [fake.attachment("cap.jpg", jpeg())]))
    [reply] = await fake.settle(1)
    assert "Amanita phalloides" in reply and "**DEADLY - can kill**" in reply
    method, url, payload = next(c for c in fake.calls if c[2].get("content") == reply)
    assert method == "POST" and url.endswith(f"/channels/{FakeDiscord.CHANNEL}/messages")
    assert str(payload["message_reference"]["message_id"]) == "42"


async def test_sharded_client_ignores_messages_without_a_mention(start, tree_syncs, fake):
    door = await start(sharded=True)
    state = door.client._connection
    state.parse_message_create(guild_message("hello everyone", mention_bot=False))
    state.parse_message_create(guild_message("<@123> /about"))
    texts = await fake.settle(1)
    assert len(texts) == 1  # only the mention was answered
    assert "About this bot" in texts[0] and "never tells you a mushroom is safe to eat" in texts[0]
