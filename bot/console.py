"""`python -m bot console`: the bot in a terminal, through the same core as every chat platform.

Reads one line at a time from stdin (a TTY or a pipe):
    /identify PATH [PATH ...]     several paths = one observation of one mushroom
    /ask QUESTION, /lookalikes, /sources, /about, /status, /reingest, /help
    any other line                a question ("is it poisonous?", "what about the first one?")
    /quit (or end of input)       exit 0
Replies are printed as plain text; buttons are shown as a hint line. The console user is the
local operator, so admin commands work and the photo rate limit is off.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bot.core import BotCore
from bot.limits import PhotoRateLimiter
from bot.messages import Event, Reply, buttons_hint, parse_command, to_plain
from bot.settings import Settings, get_settings
from vision_model.images import too_large

log = logging.getLogger(__name__)
QUIT_COMMANDS = {"quit", "exit"}


@dataclass
class ConsoleArgs:
    model: Path | None = None  # model directory (default: MODEL_DIR or the bundled release)
    build_index: bool = True  # build the knowledge base on first start when it is absent
    continue_chat: bool = False  # go on with the last console conversation (default: a new one per run)


CONSOLE_CHAT = "console"


def print_reply(reply: Reply, out=None) -> None:
    out = out or sys.stdout
    out.write(to_plain(reply.text).rstrip() + "\n")
    hint = buttons_hint(reply.buttons)
    if hint:
        out.write(hint + "\n")
    out.write("\n")
    out.flush()


def read_photo(path_text: str, max_bytes: int) -> bytes | str:
    """The photo's bytes (at most max_bytes + 1, so the core can say 'too large'), or a friendly error."""
    path = Path(path_text).expanduser()
    try:
        size = path.stat().st_size
        if size > max_bytes:  # say the real size; reading it would only waste memory
            return too_large(size, max_bytes, path_text)
        with path.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return f"I couldn't find the photo '{path_text}'."
    except IsADirectoryError:
        return f"'{path_text}' is a folder, not a photo."
    except OSError as exc:
        return f"I couldn't open the photo '{path_text}' ({exc.strerror or 'unreadable'})."


def _stderr_progress():
    """An ingest progress callback drawing a tqdm bar per stage on stderr."""
    from tqdm import tqdm

    state: dict = {"bar": None, "stage": None}

    def progress(done: int, total: int, stage: str) -> None:
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=total or None, desc=f"Knowledge base: {stage}", file=sys.stderr,
                                leave=False, mininterval=2, unit=" passages" if stage == "embed" else " steps")
            state["stage"] = stage
        bar = state["bar"]
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return progress, close


def line_to_event(line: str, settings: Settings, user: str, chat_id: str = CONSOLE_CHAT) -> Event | str | None:
    """A console line -> an Event, a direct message to print (str), or None for a blank line."""
    text = line.strip()
    if not text:
        return None
    command, args = parse_command(text)
    base = {"platform": "console", "chat_id": chat_id, "user_id": user, "is_admin": True}
    if command == "identify" and args:
        try:
            paths = shlex.split(args)
        except ValueError:
            paths = args.split()
        photos, problems = [], []
        for path in paths:
            result = read_photo(path, settings.max_image_bytes)
            (problems if isinstance(result, str) else photos).append(result)
        return Event(**base, command="identify", photos=photos, problems=problems)
    if command:
        return Event(**base, command=command, args=args)
    return Event(**base, text=text)


async def run_console(core: BotCore, settings: Settings, stdin=None, stdout=None, *,
                      continue_chat: bool = True) -> int:
    """Read lines until the end of input. The console keeps one conversation (chat "console"):
    `continue_chat=False` starts it afresh (the same local user, a new conversation)."""
    if not continue_chat:
        await asyncio.to_thread(core.memory.forget_chat, "console", CONSOLE_CHAT)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    try:
        user = getpass.getuser()
    except Exception:
        user = "operator"

    async def send_later(reply: Reply) -> None:
        print_reply(reply, stdout)

    if interactive:
        stdout.write("Mushroom bot console. Type /help, /identify PATH..., a question, or /quit.\n\n")
    while True:
        if interactive:
            stdout.write("> ")
            stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:  # EOF
            break
        command, _ = parse_command(line)
        if command in QUIT_COMMANDS:
            break
        event = line_to_event(line, settings, user)
        if event is None:
            continue
        if isinstance(event, str):
            print_reply(Reply(event), stdout)
            continue
        event.send_later = send_later
        for reply in await core.handle(event):
            print_reply(reply, stdout)
    # Let a running re-ingest finish and report before exiting.
    task = core._reingest_task
    if task is not None and not task.done():
        stdout.write("Waiting for the re-ingest to finish...\n")
        stdout.flush()
        await task
    return 0


def main(args: ConsoleArgs) -> int:
    settings = get_settings()
    core = BotCore.from_settings(  # the local operator: no rate limits
        settings, model_dir=args.model, rate_limiter=PhotoRateLimiter(0, settings.photo_rate_window_s),
        message_limiter=PhotoRateLimiter(0, settings.message_rate_window_s),
    )
    try:
        core.load_classifier()
    except Exception as exc:
        print(f"Photo identification unavailable: {exc}", file=sys.stderr)
    # After the model: the build may export the embedding model (torch, transformers), and two threads
    # importing transformers at once can catch it half-initialised ("cannot import name 'AutoModel'").
    refresh = refresh_knowledge_base(settings, core) if args.build_index else None
    try:
        code = asyncio.run(run_console(core, settings, continue_chat=args.continue_chat))
    except KeyboardInterrupt:
        code = 130
    try:
        if refresh is not None and refresh.is_alive():
            state = core.engine.building_index or "finishing"
            print(f"Waiting for the knowledge-base build to finish ({state}); Ctrl+C stops it, and the next "
                  "start builds it again.", file=sys.stderr)
            refresh.join()
    except KeyboardInterrupt:
        code = 130
    finally:
        core.close()
    return code


def refresh_knowledge_base(settings: Settings, core: BotCore):
    """Build the knowledge base on the first start, or bring in guides linked or edited since it was
    built (bot.engine.refresh_sources), in the background: the console answers at once (photos, and
    questions from the species catalog) while a tqdm bar on stderr shows the build with its estimate.
    Said once on stderr. The background thread, or None."""
    def say(text: str) -> None:
        print(text, file=sys.stderr)

    progress, close = _stderr_progress()

    def finished(report) -> None:
        close()
        say(f"Knowledge base update: {report.summary()}")

    return core.engine.refresh_sources(announce=say, done=finished, progress=progress, build_missing=True)
