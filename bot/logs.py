"""Operator-readable logging: one line per handled message.

    2026-11-28 10:00:00 INFO bot.handled platform=telegram chat=3f2a9c1e kind=photo latency_ms=412 outcome=ok

Chat ids are hashed (salted with nothing secret, just truncated SHA-256) so logs can be
shared without identifying people; tokens never reach a formatter.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable

handled_log = logging.getLogger("bot.handled")


# Shapes of secrets whatever their value: a Telegram bot token (also inside API URLs), a Discord
# token, and keys after the headers or parameters that carry them.
_SECRET_SHAPES = re.compile(
    r"\b\d{6,12}:[A-Za-z0-9_-]{30,}"                                   # Telegram: <bot id>:<secret>
    r"|\b[MNO][A-Za-z0-9_-]{20,30}\.[A-Za-z0-9_-]{5,8}\.[A-Za-z0-9_-]{25,}"  # Discord
    r"|(?<=Bearer )[^\s'\",]+|(?i:(?<=x-api-key: )|(?<=api_key=)|(?<=token=)|(?<=secret_token=))[^\s'\",&]+")
REDACTED = "[REDACTED]"


class RedactSecrets(logging.Filter):
    """Redact secrets from every record a handler writes, at every level: the configured values
    (bot tokens, API keys) and anything shaped like a token. Installed on the handlers, so records
    of every library's loggers pass through it (python-telegram-bot, discord.py, httpx, uvicorn)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _SECRET_SHAPES.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:  # tracebacks can quote URLs with tokens
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def secret_values(settings) -> list[str]:
    """The secret values of the settings (every SecretStr field that is set)."""
    from pydantic import SecretStr

    return [value.get_secret_value() for value in vars(settings).values()
            if isinstance(value, SecretStr) and value.get_secret_value()]


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    redact = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactSecrets)]
        handler.addFilter(redact)
    # httpx logs full request URLs, which for Telegram contain the bot token (redacted anyway).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def chat_hash(chat_id: object) -> str:
    return hashlib.sha256(str(chat_id).encode()).hexdigest()[:10]


def log_handled(platform: str, chat_id: object, kind: str, latency_s: float, outcome: str) -> None:
    handled_log.info(
        "platform=%s chat=%s kind=%s latency_ms=%d outcome=%s",
        platform, chat_hash(chat_id), kind, round(latency_s * 1000), outcome,
    )
