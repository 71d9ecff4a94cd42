"""Telegram front door (python-telegram-bot 22): translate updates to core events, render replies.

Polling by default; webhook mode when TELEGRAM_WEBHOOK_URL is set. Photos and image documents
are downloaded (after a size check) and handed to the core; an album (several photos with the
same media_group_id) is collected for ~1 s and becomes ONE observation. Replies use Telegram HTML
and inline keyboards; long replies are split under Telegram's 4096-character limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import replies as say
from bot.core import BotCore
from bot.messages import Event, Reply, parse_command, split_text, to_telegram_html
from bot.settings import Settings
from vision_model.images import too_large

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALBUM_WAIT_S = 1.0  # Telegram delivers an album as separate messages within about a second
TEXT_LIMIT = 3500  # under 4096 after HTML escaping grows the text a little
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic")
MENU = [
    BotCommand("identify", "Identify a mushroom from photos"),
    BotCommand("ask", "Ask a question about a mushroom"),
    BotCommand("lookalikes", "Dangerous lookalikes of your last photo"),
    BotCommand("sources", "Where my information comes from"),
    BotCommand("more", "The rest of my last answer"),
    BotCommand("new", "Start a new conversation"),
    BotCommand("correct", "Tell me what your last photo really shows"),
    BotCommand("consent", "Let me keep your photos (on/off)"),
    BotCommand("forget", "Delete everything I keep about you"),
    BotCommand("about", "The model, the data and the limits"),
    BotCommand("help", "How to use this bot"),
]
ADMIN_MENU = MENU + [
    BotCommand("status", "Model, index, uptime and queue (admins)"),
    BotCommand("reingest", "Rebuild the knowledge base (admins)"),
    BotCommand("review", "Users' feedback waiting for review (admins)"),
]


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    last_seen: float = 0.0


class TelegramFrontDoor:
    """Holds the core and the album buffer; its methods are the Application's handlers."""

    def __init__(self, core: BotCore, settings: Settings, *, album_wait_s: float = ALBUM_WAIT_S) -> None:
        self.core = core
        self.settings = settings
        self.album_wait_s = album_wait_s
        self._albums: dict[tuple[int, str], _Album] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- wiring ------------------------------------------------------------------------
    def build_application(self, token: str, *, request=None, rate_limiter: bool = True) -> Application:
        builder = (
            ApplicationBuilder()
            .token(token)
            .concurrent_updates(True)  # one slow photo must not hold up other chats
            .post_init(self._post_init)
            .post_shutdown(self._post_shutdown)
        )
        if rate_limiter:
            builder = builder.rate_limiter(AIORateLimiter(max_retries=2))
        if request is not None:
            builder = builder.request(request).get_updates_request(request)
        app = builder.build()
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & ~filters.StatusUpdate.ALL, self.on_message))
        app.add_error_handler(self.on_error)
        return app

    async def _post_init(self, app: Application) -> None:
        await app.bot.set_my_commands(MENU)
        for admin in self.settings.telegram_admins:
            # Admins also see the admin commands in their private chat with the bot; this fails
            # harmlessly for an admin who has not started a chat with it yet.
            try:
                await app.bot.set_my_commands(ADMIN_MENU, scope=BotCommandScopeChat(int(admin)))
            except Exception as exc:
                log.info("no admin menu for one admin id: %s", exc)

    async def _post_shutdown(self, app: Application) -> None:
        await self.drain()
        self.core.close()

    async def drain(self) -> None:
        """Wait for album collections in progress (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- incoming ----------------------------------------------------------------------
    def _event(self, update: Update, **kwargs) -> Event:
        user = update.effective_user
        chat = update.effective_chat
        user_id = str(user.id) if user else "unknown"
        bot = update.get_bot()
        chat_id = chat.id if chat else (user.id if user else 0)

        async def send_later(reply: Reply) -> None:
            await self.send(bot, chat_id, reply)

        return Event(
            platform=PLATFORM, chat_id=str(chat_id), user_id=user_id,
            is_admin=user_id in self.settings.telegram_admins, send_later=send_later, **kwargs,
        )

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        if is_image_message(message):
            if message.media_group_id:
                self._add_to_album(update, message)
                return
            await self._photos(update, [message])
            return
        text = (message.text or message.caption or "").strip()
        what = unsupported_kind(message)
        if what:
            await self._handle(update, self._event(update, unsupported=what))
            return
        command, args = parse_command(text)
        if command:
            await self._handle(update, self._event(update, command=command, args=args))
        else:
            await self._handle(update, self._event(update, text=text))

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        await query.answer()  # stop the button's spinner at once; the reply follows as a message
        await self._handle(update, self._event(update, button=query.data or ""))

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat:
            with contextlib.suppress(Exception):
                await context.bot.send_message(update.effective_chat.id, say.SOMETHING_WENT_WRONG)

    # --- albums ------------------------------------------------------------------------
    def _add_to_album(self, update: Update, message: Message) -> None:
        key = (message.chat_id, message.media_group_id)
        album = self._albums.get(key)
        if album is None:
            album = self._albums[key] = _Album()
            task = asyncio.create_task(self._flush_album(key, update))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        album.messages.append(message)
        album.last_seen = time.monotonic()

    async def _flush_album(self, key: tuple[int, str], update: Update) -> None:
        album = self._albums[key]
        # Wait until no new photo of this album arrived for album_wait_s.
        while (delay := album.last_seen + self.album_wait_s - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        del self._albums[key]
        messages = sorted(album.messages, key=lambda m: m.message_id)
        try:
            await self._photos(update, messages)
        except Exception:  # not inside a handler: report it the way on_error would
            log.exception("album handling failed")
            with contextlib.suppress(Exception):
                await update.get_bot().send_message(messages[0].chat_id, say.SOMETHING_WENT_WRONG)

    async def _photos(self, update: Update, messages: list[Message]) -> None:
        bot = update.get_bot()
        chat_id = messages[0].chat_id
        async with keep_chat_action(bot, chat_id, ChatAction.UPLOAD_PHOTO):
            photos, problems = [], []
            for message in messages:
                data = await self._download(message, problems)
                if data is not None:
                    photos.append(data)
            command, _ = parse_command(messages[0].caption or "")
            event = self._event(update, photos=photos, problems=problems, command=command)
            replies = await self.core.handle(event)
        for reply in replies:
            await self.send(bot, chat_id, reply)

    async def _download(self, message: Message, problems: list[str]) -> bytes | None:
        """The image's bytes, or None with a friendly sentence added to problems."""
        attachment = message.photo[-1] if message.photo else message.document  # largest photo size
        limit = self.settings.max_image_bytes
        if attachment.file_size and attachment.file_size > limit:
            problems.append(too_large(attachment.file_size, limit))
            return None
        try:
            file = await attachment.get_file()
            return bytes(await file.download_as_bytearray())
        except Exception as exc:
            log.warning("could not download a telegram photo: %s", exc)
            problems.append("I couldn't download one of your photos from Telegram. Please send it again.")
            return None

    # --- outgoing ----------------------------------------------------------------------
    async def _handle(self, update: Update, event: Event) -> None:
        chat_id = int(event.chat_id)
        bot = update.get_bot()
        async with keep_chat_action(bot, chat_id, ChatAction.TYPING):
            replies = await self.core.handle(event)
        for reply in replies:
            await self.send(bot, chat_id, reply)

    async def send(self, bot, chat_id: int | str, reply: Reply) -> None:
        parts = split_text(reply.text, TEXT_LIMIT)
        for i, part in enumerate(parts):
            markup = keyboard(reply) if i == len(parts) - 1 else None
            await bot.send_message(
                chat_id, to_telegram_html(part), parse_mode=ParseMode.HTML, reply_markup=markup,
                disable_web_page_preview=True,
            )


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    # The feedback buttons (Right / Wrong / Not sure) on a row of their own, under the others.
    rows = [[b for b in reply.buttons if not b.payload.startswith("fb:")],
            [b for b in reply.buttons if b.payload.startswith("fb:")]]
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.payload) for b in row]
                                 for row in rows if row])


def is_image_message(message: Message) -> bool:
    if message.photo:
        return True
    doc = message.document
    if doc is None:
        return False
    mime = (doc.mime_type or "").lower()
    name = (doc.file_name or "").lower()
    return mime.startswith("image/") or name.endswith(IMAGE_EXTENSIONS)


def unsupported_kind(message: Message) -> str | None:
    """A short description of an attachment we cannot identify, or None for text."""
    if message.sticker:
        return "a sticker"
    if message.document:
        name = message.document.file_name or ""
        ext = name.rsplit(".", 1)[-1].upper() if "." in name else ""
        return f"a {ext} file" if ext else "that file"
    for attr, what in (("video", "a video"), ("animation", "an animation"), ("voice", "a voice message"),
                       ("audio", "an audio file"), ("video_note", "a video message"), ("location", "a location"),
                       ("contact", "a contact"), ("poll", "a poll"), ("dice", "a dice roll")):
        if getattr(message, attr, None):
            return what
    if not (message.text or message.caption):
        return "that message"
    return None


@contextlib.asynccontextmanager
async def keep_chat_action(bot, chat_id: int | str, action: str, every_s: float = 4.5):
    """Show 'uploading photo...' / 'typing...' until the work is done (Telegram clears it after 5 s)."""

    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                await bot.send_chat_action(chat_id, action)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run_telegram(settings: Settings) -> int:
    """`python -m bot telegram`: load the model, then poll (or serve the webhook) until stopped."""
    token = settings.require("telegram_bot_token")
    core = BotCore.from_settings(settings)
    log.info("loading the vision model...")
    core.load_classifier()
    core.engine.refresh_sources()  # guides linked or edited since the index was built (logged once)
    log.info("model %s loaded", core.model_version)
    app = TelegramFrontDoor(core, settings).build_application(token)
    if settings.telegram_webhook_url:
        url = settings.telegram_webhook_url
        secret = settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret else None
        log.info("webhook mode on port %d", settings.telegram_webhook_port)
        if not secret:
            # Without a secret token anyone who learns the URL can post forged updates.
            log.warning("TELEGRAM_WEBHOOK_SECRET is not set: webhook updates are not authenticated; set it in production")
        app.run_webhook(
            listen="0.0.0.0", port=settings.telegram_webhook_port, url_path=urlparse(url).path.lstrip("/"),
            webhook_url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES,
        )
    else:
        log.info("polling mode")
        app.run_polling(allowed_updates=Update.ALL_TYPES)
    return 0
