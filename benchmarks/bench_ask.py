"""Question latency: Answerer.ask (resolve + hybrid retrieval + composition) against a raw Chroma
similarity_search of the same question, side by side in the same process, on the real index.

    python benchmarks/bench_ask.py [--repeats 3] [--torch-threads N] [--out benchmarks/results/ask.json]

The ratio ask/raw is the number to watch: it is what the answering side adds on top of the vector
store, independent of how loaded the machine is.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class BenchArgs:
    repeats: int = 3
    torch_threads: int | None = None
    out: Path = ROOT / "benchmarks" / "results" / "ask.json"


def cpu_info() -> dict:
    """CPU model and the vector extensions that change ratios several-fold between machines."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "amx": "amx_tile" in flags}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(1000 * statistics.median(values), 2),
            "p95_ms": round(1000 * percentile(values, 0.95), 2), "mean_ms": round(1000 * statistics.fmean(values), 2)}


def main(args: BenchArgs) -> dict:
    from tqdm import tqdm

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    import yaml

    from bot.settings import get_settings
    from knowledge_base.answer import Answerer
    from knowledge_base.evaluate import USER_QUESTIONS_FILE, load_questions

    settings = get_settings()
    started = time.perf_counter()
    answerer = Answerer.from_settings(settings)
    open_s = time.perf_counter() - started
    retriever = answerer.retriever
    if retriever is None or retriever.store is None or len(retriever) == 0:
        print("no serving index: run `python -m ingest run` first (benchmark needs the real index)", file=sys.stderr)
        return {}
    store = retriever.store
    # The well-formed set and the user-phrased one (typos, six languages, poisonings, follow-ups' last lines).
    user = yaml.safe_load(USER_QUESTIONS_FILE.read_text(encoding="utf-8"))
    questions = [q["q"] for q in load_questions()] + [(item.get("dialogue") or [item.get("q")])[-1] for item in user]
    # Warm-up: model load, Chroma caches.
    answerer.ask(questions[0])
    store.similarity_search(questions[0], k=5)
    ask_t, raw_t, retrieving = [], [], []
    for _ in tqdm(range(args.repeats), desc="repeats"):
        for q in questions:
            t0 = time.perf_counter()
            store.similarity_search(q, k=5)
            t1 = time.perf_counter()
            _, passages = answerer.answer_with_passages(q)  # what ask() does, plus the passages it used
            t2 = time.perf_counter()
            raw_t.append(t1 - t0)
            ask_t.append(t2 - t1)
            retrieving.append(bool(passages))
    # Off-topic and "which mushroom?" questions skip retrieval; compare the rest on their own too.
    ask_r = [t for t, r in zip(ask_t, retrieving, strict=True) if r]
    raw_r = [t for t, r in zip(raw_t, retrieving, strict=True) if r]
    result = {
        "what": "Answerer.ask vs raw Chroma similarity_search(k=5) of the same question, interleaved",
        "questions": len(questions), "repeats": args.repeats, "chunks_in_index": len(retriever),
        "answerer_open_s": round(open_s, 2),
        "ask": summary(ask_t), "raw_chroma": summary(raw_t),
        "ratio_p50": round(statistics.median(ask_t) / statistics.median(raw_t), 2),
        "ratio_p95": round(percentile(ask_t, 0.95) / percentile(raw_t, 0.95), 2),
        "questions_with_retrieval": {
            "ask": summary(ask_r), "raw_chroma": summary(raw_r),
            "ratio_p50": round(statistics.median(ask_r) / statistics.median(raw_r), 2),
            "ratio_p95": round(percentile(ask_r, 0.95) / percentile(raw_r, 0.95), 2),
        } if ask_r else None,
        "machine": {"python": platform.python_version(), "cpu": cpu_info()},
        "args": {k: str(v) for k, v in asdict(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=BenchArgs.repeats)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=BenchArgs.out)
    ns = parser.parse_args()
    main(BenchArgs(repeats=ns.repeats, torch_threads=ns.torch_threads, out=ns.out))
