"""The foundation: settings from the environment, secrets never logged, CLIs answer, CPU torch."""

import logging
import subprocess
import sys

import pytest

from bot.logs import chat_hash, log_handled, setup_logging
from bot.settings import MissingSetting, Settings


def test_settings_read_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:SECRET-TOKEN")
    monkeypatch.setenv("TELEGRAM_ADMIN_IDS", "11, 22;33")
    monkeypatch.setenv("CHROMA_PATH", str(tmp_path / "chroma"))
    monkeypatch.setenv("MAX_IMAGE_BYTES", "1234")
    s = Settings(_env_file=None)
    assert s.require("telegram_bot_token") == "123:SECRET-TOKEN"
    assert s.telegram_admins == {"11", "22", "33"}
    assert s.chroma_path == tmp_path / "chroma"
    assert s.max_image_bytes == 1234
    # Secrets never print: repr, str and model_dump_json all mask them.
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "SECRET-TOKEN" not in text


def test_settings_read_dotenv_file(monkeypatch, tmp_path):
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    env = tmp_path / ".env"
    env.write_text("DISCORD_BOT_TOKEN=from-dotenv\nDISCORD_ADMIN_IDS=42\n")
    s = Settings(_env_file=env)
    assert s.require("discord_bot_token") == "from-dotenv"
    assert s.discord_admins == {"42"}


def test_missing_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    s = Settings(_env_file=None)
    with pytest.raises(MissingSetting, match="DISCORD_BOT_TOKEN"):
        s.require("discord_bot_token")


def test_handled_log_line_has_the_operator_fields(caplog):
    setup_logging("INFO")
    with caplog.at_level(logging.INFO, logger="bot.handled"):
        log_handled("telegram", 123456789, "photo", 0.4123, "ok")
    line = caplog.records[-1].getMessage()
    assert line == f"platform=telegram chat={chat_hash(123456789)} kind=photo latency_ms=412 outcome=ok"
    assert "123456789" not in line  # chat ids are hashed


@pytest.mark.parametrize("package", ["bot", "vision_model", "knowledge_base", "ingest"])
def test_every_package_cli_answers_help(package):
    out = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_torch_is_the_cpu_build():
    import torch

    assert torch.version.cuda is None
