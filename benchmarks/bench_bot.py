"""Throughput of the bot's conversation core against the classifier called directly.

    python benchmarks/bench_bot.py [--messages 100] [--model DIR] [--rounds 3]

Sends `messages` photo messages at once (one photo each, each from its own chat and user)
through `BotCore.handle` (decode, identify, SQLite memory, reply text, log line), and runs the
same photos through `Classifier.identify` one after another in this process (the plain
baseline). The two alternate for `rounds` rounds on the shared machine and the median round of
each is kept. Reports the throughput ratio core/direct (target >= 0.8), p50/p95 latency of the
concurrent messages, and whether every message got a reply; writes JSON to
benchmarks/results/bot.json.

Photos: the real ones in ../shared/data/images when present, else generated ones. Model: the
bundled release when it exists, else a tiny random model (then the numbers measure the core's
overhead around a near-free model, and the JSON says so).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "images"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bot.json"


@dataclass
class BenchArgs:
    messages: int = 100
    model: str | None = None  # model directory; None: bundled release, else a tiny model
    images: str = str(DEFAULT_IMAGES)
    rounds: int = 3
    warmup: int = 4
    out: str = str(DEFAULT_OUT)


def parse_args(argv=None) -> BenchArgs:
    defaults = BenchArgs()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, value in asdict(defaults).items():
        kind = int if isinstance(value, int) else str
        parser.add_argument(f"--{name}", type=kind, default=value)
    return BenchArgs(**vars(parser.parse_args(argv)))


def load_photos(folder: Path, n: int) -> tuple[list[bytes], str]:
    """n JPEG photos: real ones spread over the species folders, else generated ones."""
    if folder.is_dir():
        paths = sorted(folder.glob("*/*.jpg"))
        if paths:
            step = max(1, len(paths) // n)
            chosen = paths[::step][:n]
            while len(chosen) < n:
                chosen += chosen[: n - len(chosen)]
            return [p.read_bytes() for p in chosen], f"real ({folder})"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
        photos.append(buf.getvalue())
    return photos, "generated"


def resolve_model(model: str | None, tmp: Path) -> tuple[str, str]:
    from vision_model.release import bundled_model_available

    if model:
        return model, "given"
    if bundled_model_available():
        return None, "bundled release"
    from vision_model.testing import make_tiny_model_dir

    return str(make_tiny_model_dir(tmp / "tiny")), "tiny random model (bundled release absent)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


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
    args = parse_args(argv)
    logging.getLogger("bot.handled").setLevel(logging.WARNING)  # one line per message would swamp the output
    from bot.core import BotCore
    from bot.settings import Settings
    from knowledge_base.answer import Answerer
    from vision_model.classifier import Classifier

    tmp = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    model_dir, model_source = resolve_model(args.model, tmp)
    photos, photo_source = load_photos(Path(args.images), args.messages)
    classifier = Classifier.load(model_dir)
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
    median_round = sorted(core_runs, key=lambda run: run[0])[len(core_runs) // 2]
    core_s, latencies, replied = median_round
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
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3),
        "replied": replied,
        "every_message_replied": replied == n,
        "all_rounds": {"direct_s": [round(x, 3) for x in direct_runs], "core_s": [round(x[0], 3) for x in core_runs]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if result["every_message_replied"] else 1


if __name__ == "__main__":
    sys.exit(main())
