"""Load test of the HTTP API on loopback, against the classifier called in-process.

    python benchmarks/bench_api.py [--requests 200] [--concurrency 8] [--model DIR]

Starts uvicorn in a thread on 127.0.0.1 (an ephemeral port), sends `requests` POST
/v1/identify calls (one photo each) from `concurrency` concurrent httpx.AsyncClient tasks, then
runs the same photos through `Classifier.identify` in this process, one after another (the
plain baseline) and from `concurrency` threads. The three runs alternate for `rounds` rounds
(the machine is shared; the median round of each is kept). Reports throughput, p50/p95 latency
and their ratios; writes JSON to benchmarks/results/api.json.

Photos: the real ones in ../shared/data/images when present, else generated ones. Model: the
bundled release when it exists, else a tiny random model (then the numbers measure the HTTP
overhead around a near-free model, and the JSON says so).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option


@dataclass
class BenchArgs(support.PhotoArgs):  # --model, --images
    requests: int = 200
    concurrency: int = 8
    warmup: int = 8
    rounds: int = option(3, "alternating rounds; median kept")
    out: str = str(support.RESULTS / "api.json")


class LoopbackServer:
    """uvicorn serving `app` in a background thread on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def load_run(url: str, photos: list[bytes], concurrency: int, progress) -> tuple[list[float], float, int]:
    import httpx

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for photo in photos:
        queue.put_nowait(photo)
    latencies: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            try:
                photo = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            response = await client.post("/v1/identify", files={"image": ("photo.jpg", photo, "image/jpeg")})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200
            progress.update(1)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, errors


def summary(latencies: list[float], elapsed: float, **extra: object) -> dict:
    return {"throughput_rps": round(len(latencies) / elapsed, 2), **support.latency_ms(latencies), **extra}


def in_process_run(classifier, photos: list[bytes], threads: int) -> tuple[list[float], float]:
    """Classifier.identify on each photo in this process, from `threads` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def timed(photo: bytes) -> float:
        start = time.perf_counter()
        classifier.identify([photo])
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        latencies = list(tqdm(pool.map(timed, photos), total=len(photos), desc=f"in-process x{threads}"))
    return latencies, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    from tqdm import tqdm

    from bot.api import create_app
    from bot.settings import Settings
    from knowledge_base.answer import Answerer

    args = support.parse_args(BenchArgs, argv, __doc__)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        classifier, model_note = support.load_classifier(args.model, tmp)
        photos, photo_note = support.load_photos(Path(args.images), args.requests)
        settings = Settings(_env_file=None, CHROMA_PATH=str(tmp / "chroma"))
        app = create_app(settings, classifier=classifier, answerer=Answerer(None))

        # Warm both paths (ONNX session, allocator, HTTP connections) before timing.
        for photo in photos[: args.warmup]:
            classifier.identify([photo])

        # The machine is shared: alternate the three runs for `rounds` rounds and keep, for
        # each, the round with the median throughput, so a burst of outside load hits all alike.
        runs: dict[str, list[dict]] = {"api": [], "sequential": [], "threads": []}
        with LoopbackServer(app) as url:
            with tqdm(total=args.warmup, desc="warm-up", leave=False) as bar:
                asyncio.run(load_run(url, photos[: args.warmup], min(args.concurrency, args.warmup), bar))
            for round_no in range(args.rounds):
                with tqdm(total=len(photos), desc=f"round {round_no + 1}: API x{args.concurrency}") as bar:
                    latencies, elapsed, errors = asyncio.run(load_run(url, photos, args.concurrency, bar))
                runs["api"].append(summary(latencies, elapsed, errors=errors))
                runs["sequential"].append(summary(*in_process_run(classifier, photos, 1)))
                runs["threads"].append(summary(*in_process_run(classifier, photos, args.concurrency)))

    api, local, threaded = (support.median_by(runs[key], lambda run: run["throughput_rps"])
                            for key in ("api", "sequential", "threads"))
    result = {
        "benchmark": "HTTP API /v1/identify on loopback vs Classifier.identify in-process",
        "config": asdict(args),
        "model": f"{model_note} (version {classifier.version}, backend {classifier.backend})",
        "photos": photo_note,
        "machine": support.machine(note="CPUs shared with other jobs"),
        "api": api,
        "in_process_sequential": local,
        f"in_process_{args.concurrency}_threads": threaded,
        "ratios": {
            "api_throughput_over_in_process": round(api["throughput_rps"] / local["throughput_rps"], 3),
            "api_throughput_over_in_process_threads": round(api["throughput_rps"] / threaded["throughput_rps"], 3),
            "api_p50_over_in_process_p50": round(api["p50_ms"] / local["p50_ms"], 3),
        },
        # Serving cost per photo on top of the model: HTTP, multipart parsing, decoding, JSON.
        "throughput_rps_every_round": {key: [r["throughput_rps"] for r in value] for key, value in runs.items()},
        "api_overhead_ms_per_request": round(1000 / api["throughput_rps"] - 1000 / local["throughput_rps"], 2),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "note": "API latency includes queueing: requests in flight wait for the one classifier, which "
        "runs one batch at a time on all cores.",
    }
    support.write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
