"""Discord front door (discord.py 2): slash commands, DMs and mentions, buttons.

- Slash commands: /identify image:<attachment> [image2] [image3], /ask question:, /lookalikes
  [species:], /sources, /about, /help, /status, /reingest. Each defers ("thinking...") while the
  core works, then answers with follow-up messages.
- Messages: image attachments in DMs, or in a server channel when the bot is mentioned, are one
  observation; text after the mention is a question (or a /command typed as text).
- Buttons: persistent `DynamicItem`s (custom_id "mb:<payload>"), so they keep working after a restart.
- Intents: the privileged MESSAGE CONTENT intent must be enabled in the Developer Portal
  (Bot > Privileged Gateway Intents) for the text of mentions in server channels.
- The command list is pushed to Discord only with `python -m bot discord --sync` (rate-limited
  by Discord; needed once after the commands change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from pathlib import Path

import discord
from discord import app_commands

from bot import replies as say
from bot.core import BotCore
from bot.messages import Event, Reply, parse_command, split_text, to_discord_markdown
from bot.settings import Settings
from vision_model.images import too_large

log = logging.getLogger(__name__)

PLATFORM = "discord"
TEXT_LIMIT = 1900  # Discord's limit is 2000 characters per message
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic")
_MENTION = re.compile(r"<@!?\d+>")


class CoreButton(discord.ui.DynamicItem[discord.ui.Button], template=r"mb:(?P<payload>.{1,90})"):
    """A reply button; its payload goes back to the core when pressed (even after a restart)."""

    def __init__(self, label: str, payload: str) -> None:
        # The feedback buttons (Right / Wrong / Not sure) on a row of their own, under the others.
        super().__init__(discord.ui.Button(label=label, custom_id=f"mb:{payload}",
                                           style=discord.ButtonStyle.secondary,
                                           row=1 if payload.startswith("fb:") else 0))
        self.payload = payload

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match):
        return cls(item.label or "", match["payload"])

    async def callback(self, interaction: discord.Interaction) -> None:
        door: DiscordFrontDoor = interaction.client.front_door  # type: ignore[attr-defined]
        await door.on_button(interaction, self.payload)


def reply_view(reply: Reply) -> discord.ui.View | None:
    if not reply.buttons:
        return None
    view = discord.ui.View(timeout=None)
    for b in reply.buttons:
        view.add_item(CoreButton(b.label, b.payload))
    return view


def is_image(attachment: discord.Attachment) -> bool:
    content_type = (attachment.content_type or "").lower()
    return content_type.startswith("image/") or attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


HEALTH_EVERY_S = 30.0


class DiscordFrontDoor:
    def __init__(self, core: BotCore, settings: Settings, *, sync: bool = False) -> None:
        self.core = core
        self.settings = settings
        self.sync = sync
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the Developer Portal too
        client_class = discord.AutoShardedClient if settings.discord_sharded else discord.Client
        self.client = client_class(intents=intents)
        self.client.front_door = self  # type: ignore[attr-defined]  # for CoreButton callbacks
        self.tree = app_commands.CommandTree(self.client)
        self._add_commands()
        self.tree.on_error = self.on_command_error  # type: ignore[method-assign]
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        self.client.event(self.on_message)
        self.client.event(self.on_ready)

    # --- start-up ----------------------------------------------------------------------
    async def _setup_hook(self) -> None:
        self.client.add_dynamic_items(CoreButton)
        self._health_task = asyncio.create_task(self._report_gateway_health())
        if self.sync:
            commands = await self.tree.sync()
            log.info("synced %d slash commands with Discord", len(commands))

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s", self.client.user)
        self.mark_alive_if_connected()

    def mark_alive_if_connected(self) -> bool:
        """Touch the health file when the gateway connection is up (ready, open, with a measured
        heartbeat latency). A stale file tells the liveness probe that the bot lost Discord."""
        client = self.client
        connected = client.is_ready() and not client.is_closed() and math.isfinite(client.latency)
        if connected:
            path = Path(self.settings.discord_health_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{time.time():.0f}\n", encoding="utf-8")
        return connected

    async def _report_gateway_health(self) -> None:
        while True:
            try:
                self.mark_alive_if_connected()
            except OSError as error:
                log.warning("could not write the Discord health file: %s", error)
            await asyncio.sleep(HEALTH_EVERY_S)

    def is_admin(self, user: discord.abc.User) -> bool:
        return str(user.id) in self.settings.discord_admins

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(name="identify", description="Identify a mushroom from one to three photos of it")
        @app_commands.describe(image="a photo of the mushroom", image2="another photo of the same mushroom",
                               image3="another photo of the same mushroom")
        async def identify(interaction: discord.Interaction, image: discord.Attachment,
                           image2: discord.Attachment | None = None, image3: discord.Attachment | None = None):
            await interaction.response.defer(thinking=True)
            attachments = [a for a in (image, image2, image3) if a is not None]
            photos, problems = await self._read_images(attachments)
            await self._respond(interaction, self._event(interaction, command="identify", photos=photos,
                                                         problems=problems))

        @tree.command(name="ask", description="Ask a question about a mushroom or your last photo")
        @app_commands.describe(question="e.g. is it poisonous? / what about the first one?")
        async def ask(interaction: discord.Interaction, question: str):
            await interaction.response.defer(thinking=True)
            await self._respond(interaction, self._event(interaction, command="ask", args=question))

        @tree.command(name="lookalikes", description="Dangerous lookalikes of your last photo or of a species")
        @app_commands.describe(species="a species name (optional)")
        async def lookalikes(interaction: discord.Interaction, species: str | None = None):
            await interaction.response.defer(thinking=True)
            await self._respond(interaction, self._event(interaction, command="lookalikes", args=species or ""))

        @tree.command(name="correct", description="Tell me what your last photo really shows")
        @app_commands.describe(species="the species (Latin or common name), or 'unknown'")
        async def correct(interaction: discord.Interaction, species: str):
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._respond(interaction, self._event(interaction, command="correct", args=species))

        @tree.command(name="consent", description="May I keep your photos to improve the model? (on/off)")
        @app_commands.describe(choice="on or off (empty: show the current choice)")
        @app_commands.choices(choice=[app_commands.Choice(name="on", value="on"),
                                      app_commands.Choice(name="off", value="off")])
        async def consent(interaction: discord.Interaction, choice: str | None = None):
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._respond(interaction, self._event(interaction, command="consent", args=choice or ""))

        @tree.command(name="review", description="Users' feedback waiting for review (admins)")
        @app_commands.describe(action="empty to list; 'accept ID [species]' or 'reject ID'")
        async def review(interaction: discord.Interaction, action: str | None = None):
            await interaction.response.defer(thinking=True, ephemeral=True)
            await self._respond(interaction, self._event(interaction, command="review", args=action or ""))

        for name, description in (
            ("forget", "Delete everything I keep about you: this chat, your feedback and your photos"),
            ("sources", "Where my information comes from"),
            ("more", "The rest of my last answer"),
            ("new", "Start a new conversation (forget this chat's photos and questions)"),
            ("about", "The model, the data and the limits"),
            ("help", "How to use this bot"),
            ("status", "Model and index status (admins)"),
            ("reingest", "Rebuild the knowledge base (admins)"),
        ):
            tree.add_command(app_commands.Command(name=name, description=description,
                                                  callback=self._simple_command(name)))

    async def on_command_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.error("discord command failed", exc_info=error)
        with contextlib.suppress(Exception):
            if interaction.response.is_done():
                await interaction.followup.send(say.SOMETHING_WENT_WRONG)
            else:
                await interaction.response.send_message(say.SOMETHING_WENT_WRONG)

    def _simple_command(self, name: str):
        async def callback(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await self._respond(interaction, self._event(interaction, command=name))

        callback.__name__ = f"{name}_command"
        return callback

    # --- events ------------------------------------------------------------------------
    def _event(self, interaction: discord.Interaction, **kwargs) -> Event:
        channel = interaction.channel

        async def send_later(reply: Reply) -> None:
            try:
                await send_reply(channel, reply)
            except Exception:  # e.g. no permission to post in the channel: the webhook still works
                await send_reply(interaction.followup, reply)

        return Event(platform=PLATFORM, chat_id=str(interaction.channel_id or interaction.user.id),
                     user_id=str(interaction.user.id), is_admin=self.is_admin(interaction.user),
                     send_later=send_later, **kwargs)

    async def _respond(self, interaction: discord.Interaction, event: Event) -> None:
        for reply in await self.core.handle(event):
            await send_reply(interaction.followup, reply)

    async def on_button(self, interaction: discord.Interaction, payload: str) -> None:
        await interaction.response.defer(thinking=True)
        await self._respond(interaction, self._event(interaction, button=payload))

    async def _read_images(self, attachments: list[discord.Attachment]) -> tuple[list[bytes], list[str]]:
        photos, problems = [], []
        limit = self.settings.max_image_bytes
        for a in attachments:
            if not is_image(a):
                problems.append(f"'{a.filename}' isn't a photo I can read; please send JPEG, PNG or WebP photos.")
            elif a.size > limit:
                problems.append(too_large(a.size, limit, a.filename))
            else:
                try:
                    photos.append(await a.read())
                except Exception as exc:  # CDN error, timeout: say so instead of failing the message
                    log.warning("could not download a discord attachment: %s", exc)
                    problems.append(f"I couldn't download '{a.filename}'. Please send it again.")
        return photos, problems

    async def on_message(self, message: discord.Message) -> None:
        try:
            await self._on_message(message)
        except Exception:
            log.exception("discord message handling failed")
            with contextlib.suppress(Exception):
                await message.channel.send(say.SOMETHING_WENT_WRONG)

    async def _on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        me = self.client.user
        is_dm = isinstance(message.channel, discord.DMChannel)
        if not is_dm and not (me and me in message.mentions):
            return
        text = _MENTION.sub("", message.content or "").strip()
        base = {"platform": PLATFORM, "chat_id": str(message.channel.id), "user_id": str(message.author.id),
                "is_admin": self.is_admin(message.author)}
        channel = message.channel

        async def send_later(reply: Reply) -> None:
            await send_reply(channel, reply)

        if message.attachments:
            photos, problems = await self._read_images(list(message.attachments))
            command, _ = parse_command(text)
            event = Event(**base, photos=photos, problems=problems, command=command, send_later=send_later)
        elif message.stickers:
            event = Event(**base, unsupported="a sticker", send_later=send_later)
        else:
            command, args = parse_command(text)
            event = Event(**base, command=command, args=args, text="" if command else text, send_later=send_later)
            if not command and not text:
                event = Event(**base, command="help", send_later=send_later)  # a bare mention
        async with channel.typing():
            replies = await self.core.handle(event)
        for i, reply in enumerate(replies):
            await send_reply(channel, reply, reference=message if i == 0 else None)


async def send_reply(target, reply: Reply, *, reference: discord.Message | None = None) -> None:
    """Send a reply through a channel or an interaction's followup webhook, split under 2000 chars."""
    parts = split_text(reply.text, TEXT_LIMIT)
    for i, part in enumerate(parts):
        kwargs = {}
        if i == len(parts) - 1 and (view := reply_view(reply)) is not None:
            kwargs["view"] = view
        if reference is not None and i == 0:
            kwargs["reference"] = reference
            kwargs["mention_author"] = False
        await target.send(to_discord_markdown(part), **kwargs)


def run_discord(settings: Settings, args) -> int:
    """`python -m bot discord [--sync]`: load the model and run until stopped (Ctrl-C)."""
    token = settings.require("discord_bot_token")
    core = BotCore.from_settings(settings)
    log.info("loading the vision model...")
    core.load_classifier()
    core.engine.refresh_sources()  # guides linked or edited since the index was built (logged once)
    door = DiscordFrontDoor(core, settings, sync=getattr(args, "sync", False))
    try:
        door.client.run(token, log_handler=None)  # logging is already configured (bot.logs)
    finally:
        core.close()
    return 0

