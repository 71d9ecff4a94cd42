"""Telegram webhook mode: the real Application's webhook server on loopback, fed over HTTP.

`run_telegram` blocks in `Application.run_webhook`, so the first test runs it with run_webhook /
run_polling replaced by recorders, to learn exactly how the adapter configures the webhook from
TELEGRAM_WEBHOOK_URL / _SECRET / _PORT. The second starts the same configuration (listen on
127.0.0.1 and a free port instead of 0.0.0.0:TELEGRAM_WEBHOOK_PORT) with `updater.start_webhook`,
which is what run_webhook does before it waits for a stop signal, over the recording FakeTelegram of
bot_support, and POSTs Telegram updates to it with httpx.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket

import httpx
import pytest
from api_support import free_port
from bot_support import FakeTelegram, jpeg, make_core, make_settings, tiny_model
from telegram import Update
from telegram.ext import Application

import bot.telegram_adapter as telegram_adapter
from bot.core import BotCore
from bot.telegram_adapter import TelegramFrontDoor

WEBHOOK_URL = "https://bot.example.org/telegram/hook-7f3a"
SECRET = "webhook-Secret_123"


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("tg-webhook-models")), "amanita_phalloides")


def webhook_settings(tmp_path, **overrides):
    values = {"TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN, "TELEGRAM_WEBHOOK_URL": WEBHOOK_URL,
              "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_WEBHOOK_PORT": 8444}
    values.update(overrides)
    return make_settings(tmp_path, **{k: v for k, v in values.items() if v is not None})


def how_run_telegram_starts(settings, model_dir, monkeypatch) -> tuple[str, dict]:
    """Run the adapter's `run_telegram` with the blocking run_* methods recorded instead of run."""
    started: list[tuple[str, dict]] = []
    cores: list[BotCore] = []

    def from_settings(cls, settings, **kwargs):
        cores.append(make_core(settings, model_dir))  # the tiny model instead of the release
        return cores[-1]

    monkeypatch.setattr(telegram_adapter.BotCore, "from_settings", classmethod(from_settings))
    monkeypatch.setattr(Application, "run_webhook", lambda self, **kw: started.append(("webhook", kw)))
    monkeypatch.setattr(Application, "run_polling", lambda self, **kw: started.append(("polling", kw)))
    try:
        assert telegram_adapter.run_telegram(settings) == 0
    finally:
        for core in cores:
            core.close()
    [(mode, kwargs)] = started
    return mode, kwargs


def test_webhook_url_selects_webhook_mode_and_polling_otherwise(tmp_path, deadly_model, monkeypatch):
    mode, kwargs = how_run_telegram_starts(webhook_settings(tmp_path), deadly_model, monkeypatch)
    assert mode == "webhook"
    assert kwargs["webhook_url"] == WEBHOOK_URL
    assert kwargs["url_path"] == "telegram/hook-7f3a"  # the server listens on the URL's own path
    assert kwargs["secret_token"] == SECRET
    assert kwargs["port"] == 8444

    mode, _ = how_run_telegram_starts(webhook_settings(tmp_path, TELEGRAM_WEBHOOK_URL=None), deadly_model,
                                      monkeypatch)
    assert mode == "polling"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def wait_for(condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def test_webhook_server_serves_updates_and_refuses_a_wrong_secret(tmp_path, deadly_model, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    settings = webhook_settings(tmp_path)
    _, options = how_run_telegram_starts(settings, deadly_model, monkeypatch)
    monkeypatch.undo()  # the real run_webhook / from_settings again (not used below, but no surprises)

    door = TelegramFrontDoor(make_core(settings, deadly_model), settings)
    fake = FakeTelegram()
    app = door.build_application(FakeTelegram.TOKEN, request=fake)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/{options['url_path']}"
    ids = itertools.count(1)

    def update(**message) -> dict:
        return FakeTelegram.message_update(next(ids), next(ids), **message)

    await app.initialize()
    try:
        await door._post_init(app)
        await app.updater.start_webhook(**{**options, "listen": "127.0.0.1", "port": port})
        await app.start()
        assert not port_is_free(port)

        [webhook] = fake.sent("setWebhook")
        assert webhook["url"] == WEBHOOK_URL and webhook["secret_token"] == SECRET
        assert "callback_query" in webhook["allowed_updates"]  # button presses reach the bot too
        assert set(webhook["allowed_updates"]) == set(Update.ALL_TYPES)

        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            async def post(data: dict, secret: str | None = SECRET) -> int:
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
                return (await http.post(endpoint, json=data, headers=headers)).status_code

            assert await post(update(text="/help")) == 200
            await wait_for(lambda: len(fake.sent()) >= 1)
            [help_reply] = fake.sent()
            assert help_reply["chat_id"] == FakeTelegram.USER and "/identify" in help_reply["text"]

            assert await post(update(**fake.photo("w1", jpeg()))) == 200
            await wait_for(lambda: len(fake.sent()) >= 2)
            photo_reply = fake.sent()[1]
            assert "Amanita phalloides" in photo_reply["text"] and "<b>DEADLY - can kill</b>" in photo_reply["text"]
            assert fake.sent("getFile") == [{"file_id": "w1"}]

            # Forged updates: a wrong or missing secret is refused and never reaches the bot.
            assert await post(update(text="/about"), secret="not-the-secret") == 403
            assert await post(update(text="/about"), secret=None) == 403
            assert (await http.post(endpoint, content=b"{}", headers={
                "X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "text/plain"})).status_code == 403
            await asyncio.sleep(0.3)
            assert len(fake.sent()) == 2
    finally:
        if app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await door.drain()
        await app.shutdown()
        door.core.close()

    assert not app.updater.running and not app.running
    assert port_is_free(port)  # the webhook server let go of its port
    assert SECRET not in caplog.text and FakeTelegram.TOKEN not in caplog.text  # no secret in the logs
