"""Operator-readable logging: one line per handled message.

    2026-11-28 10:00:00 INFO bot.handled platform=telegram chat=3f2a9c1e kind=photo latency_ms=412 outcome=ok

Chat ids are hashed (salted with nothing secret, just truncated SHA-256) so logs can be
shared without identifying people; tokens never reach a formatter.
"""

from __future__ import annotations

import hashlib
import logging

handled_log = logging.getLogger("bot.handled")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs full request URLs, which for Telegram contain the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def chat_hash(chat_id: object) -> str:
    return hashlib.sha256(str(chat_id).encode()).hexdigest()[:10]


def log_handled(platform: str, chat_id: object, kind: str, latency_s: float, outcome: str) -> None:
    handled_log.info(
        "platform=%s chat=%s kind=%s latency_ms=%d outcome=%s",
        platform, chat_hash(chat_id), kind, round(latency_s * 1000), outcome,
    )
