"""`python -m bot console|telegram|discord|api`: run one front door of the bot."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from bot.logs import secret_values, setup_logging
from bot.settings import MissingSetting, get_settings


@dataclass
class DiscordArgs:
    sync: bool = False  # push the slash-command list to Discord (needed once after changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Mushroom identification bot.")
    sub = parser.add_subparsers(dest="front_door", required=True)
    console = sub.add_parser("console", help="chat with the bot in this terminal (reads stdin)")
    console.add_argument("--model", type=Path, default=None,
                         help="model directory (default: MODEL_DIR or the bundled release)")
    console.add_argument("--continue", dest="continue_chat", action="store_true",
                         help="continue the previous console conversation instead of starting a new one")
    console.add_argument("--no-build-index", action="store_true",
                         help="do not build the knowledge base on first start")
    sub.add_parser("telegram", help="run the Telegram bot (TELEGRAM_BOT_TOKEN; webhook if TELEGRAM_WEBHOOK_URL)")
    discord = sub.add_parser("discord", help="run the Discord bot (DISCORD_BOT_TOKEN)")
    discord.add_argument("--sync", action="store_true", help="sync the slash commands with Discord at start")
    sub.add_parser("api", help="run the HTTP API (options after 'api' go to it)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "api":
        # The API has its own options; import it only when asked (it pulls in FastAPI).
        from bot.api import main as api_main

        return api_main(argv[1:])
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level if args.front_door != "console" else "WARNING", secret_values(settings))
    try:
        if args.front_door == "console":
            from bot.console import ConsoleArgs
            from bot.console import main as console_main

            return console_main(ConsoleArgs(model=args.model, build_index=not args.no_build_index,
                                                continue_chat=args.continue_chat))
        if args.front_door == "telegram":
            from bot.telegram_adapter import run_telegram

            return run_telegram(settings)
        if args.front_door == "discord":
            from bot.discord_adapter import run_discord

            return run_discord(settings, DiscordArgs(sync=args.sync))
    except MissingSetting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown front door {args.front_door!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
