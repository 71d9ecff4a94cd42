"""No token or key in any log line, at any level (issue 22): a DEBUG Telegram session and library
log lines that quote secrets, all through the handlers `setup_logging` configures."""

from __future__ import annotations

import io
import logging

import pytest
from bot_support import FakeTelegram, jpeg, make_core, make_settings, tiny_model
from telegram import Update

from bot.logs import REDACTED, RedactSecrets, secret_values, setup_logging
from bot.telegram_adapter import TelegramFrontDoor

TOKEN = "7012345678:AAH3kq-Example_Token_That_Is_Long_Enough_42"
API_KEY = "sk-test-0123456789abcdef"
DISCORD = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def captured():
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    setup_logging("DEBUG", [TOKEN, API_KEY])
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_a_debug_telegram_session_logs_no_token(tmp_path, captured):
    settings = make_settings(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, API_KEY=API_KEY)
    model = tiny_model(str(tmp_path / "model"), "amanita_phalloides")
    door = TelegramFrontDoor(make_core(settings, model), settings, album_wait_s=0.1)
    fake = FakeTelegram()
    app = door.build_application(TOKEN, request=fake)
    await app.initialize()
    for n, message in enumerate([{"text": "is the death cap deadly?"}, fake.photo("p1", jpeg())]):
        update = FakeTelegram.message_update(n + 1, n + 1, user=5, **message)
        await app.process_update(Update.de_json(update, app.bot))
    await door.drain()
    # Library lines that quote secrets, as httpx, uvicorn and a failing request would.
    logging.getLogger("httpx").warning("HTTP Request: POST https://api.telegram.org/bot%s/getMe", TOKEN)
    logging.getLogger("uvicorn.access").debug("headers: X-API-Key: %s, Authorization: Bearer %s", API_KEY, API_KEY)
    try:
        raise RuntimeError(f"request to https://api.telegram.org/bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        logging.getLogger("telegram.ext").exception("update failed")
    logging.getLogger("discord.gateway").debug("IDENTIFY with token %s", DISCORD)
    await app.shutdown()
    door.core.close()
    text = captured.getvalue()
    assert "DEBUG" in text and "bot.handled" in text  # the session was logged at DEBUG
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    assert API_KEY not in text and DISCORD not in text
    assert text.count(REDACTED) >= 5
    assert FakeTelegram.BOT_USER["username"] in text or "getMe" in text or "handled" in text


def test_secret_values_are_every_secret_setting(tmp_path):
    settings = make_settings(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, API_KEY=API_KEY)
    assert set(secret_values(settings)) >= {TOKEN, API_KEY}
    assert RedactSecrets([TOKEN]).redact(f"url /bot{TOKEN}/x") == f"url /bot{REDACTED}/x"
