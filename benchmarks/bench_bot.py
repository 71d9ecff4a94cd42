"""Throughput of the bot's conversation core against the classifier called directly.

    python benchmarks/bench_bot.py [--messages 100] [--model DIR] [--rounds 3]

Sends `messages` photo messages at once (one photo each, each from its own chat and user)
through `BotCore.handle` (decode, identify, SQLite memory, reply text, log line), and runs the
same photos through `Classifier.identify` one after another in this process (the plain
baseline). The two alternate for `rounds` rounds on the shared machine and the median round of
each is kept. Reports the throughput ratio core/direct (target >= 0.8), p50/p95 latency of the
concurrent messages, and whether every message got a reply; writes JSON to
benchmarks/results/bot.json.

Photos and model as in bench_api.py (benchmarks/support.py picks both): the real photos and the
bundled release when present, else generated photos and a tiny random model, whose figures measure
the core's overhead around a near-free model (the JSON says which).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option


@dataclass
class BenchArgs(support.PhotoArgs):  # --model, --images
    messages: int = 100
    rounds: int = option(3, "alternating rounds; median kept")
    warmup: int = 4
    out: str = str(support.RESULTS / "bot.json")


def run_direct(classifier, photos: list[bytes]) -> float:
    started = time.perf_counter()
    for photo in photos:
        classifier.identify([photo])
    return time.perf_counter() - started


async def run_core(core, photos: list[bytes], round_no: int) -> tuple[float, list[float], int]:
    from bot.messages import Event

    async def one(i: int, photo: bytes) -> tuple[float, bool]:
        started = time.perf_counter()
        event = Event(platform="bench", chat_id=f"r{round_no}-c{i}", user_id=f"u{i}", photos=[photo])
        replies = await core.handle(event)
        ok = bool(replies) and bool(replies[0].text) and bool(replies[0].buttons)  # an identification reply
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(photos)))
    total = time.perf_counter() - started
    return total, [r[0] for r in results], sum(r[1] for r in results)


def main(argv=None) -> int:
    args = support.parse_args(BenchArgs, argv, __doc__)
    logging.getLogger("bot.handled").setLevel(logging.WARNING)  # one line per message would swamp the output
    from bot.core import BotCore
    from bot.settings import Settings
    from knowledge_base.answer import Answerer

    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp_name:
        tmp = Path(tmp_name)
        classifier, model_source = support.load_classifier(args.model, tmp)
        photos, photo_source = support.load_photos(Path(args.images), args.messages)
        settings = Settings(
            DATABASE_URL=f"sqlite:///{tmp / 'bot.sqlite3'}", CHROMA_PATH=str(tmp / "chroma"),
            PHOTO_RATE_LIMIT=0,  # every message comes from a different user anyway
        )
        core = BotCore(settings, classifier=classifier, answerer=Answerer(None))
        print(f"model: {model_source} ({classifier.version}, backend {getattr(classifier, 'backend', '?')}); "
              f"photos: {len(photos)} {photo_source}; worker threads: {settings.worker_threads}", file=sys.stderr)

        run_direct(classifier, photos[: args.warmup])  # warm caches and lazy initialisation
        asyncio.run(run_core(core, photos[: args.warmup], -1))
        direct_runs, core_runs = [], []
        for r in range(args.rounds):
            direct_runs.append(run_direct(classifier, photos))
            core_runs.append(asyncio.run(run_core(core, photos, r)))
            print(f"round {r + 1}: direct {direct_runs[-1]:.2f}s, core {core_runs[-1][0]:.2f}s", file=sys.stderr)
        core.close()

    direct_s = statistics.median(direct_runs)
    core_s, latencies, replied = support.median_by(core_runs, lambda run: run[0])
    n = len(photos)
    result = {
        "benchmark": "bot core: concurrent photo messages vs Classifier.identify called directly",
        "messages": n,
        "photos": photo_source,
        "model": model_source,
        "model_version": classifier.version,
        "backend": getattr(classifier, "backend", None),
        "worker_threads": settings.worker_threads,
        "rounds": args.rounds,
        "direct_s": round(direct_s, 3),
        "direct_photos_per_s": round(n / direct_s, 2),
        "core_s": round(core_s, 3),
        "core_messages_per_s": round(n / core_s, 2),
        "throughput_ratio": round(direct_s / core_s, 3),
        "target_ratio": 0.8,
        "latency_p50_s": round(support.percentile(latencies, 0.5), 3),
        "latency_p95_s": round(support.percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3),
        "replied": replied,
        "every_message_replied": replied == n,
        "all_rounds": {"direct_s": [round(x, 3) for x in direct_runs], "core_s": [round(x[0], 3) for x in core_runs]},
        "machine": support.machine(load_avg_1m=round(os.getloadavg()[0], 2)),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    support.write_result(args.out, result)
    return 0 if result["every_message_replied"] else 1


if __name__ == "__main__":
    sys.exit(main())
