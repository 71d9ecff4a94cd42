"""Question latency: Answerer.ask (resolve + hybrid retrieval + composition) against a raw Chroma
similarity_search of the same question, side by side in the same process, on the real index.

    python benchmarks/bench_ask.py [--repeats 3] [--torch-threads N] [--out benchmarks/results/ask.json]

The ratio ask/raw is the number to watch: it is what the answering side adds on top of the vector
store, independent of how loaded the machine is.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option


@dataclass
class BenchArgs:
    repeats: int = 3
    torch_threads: int | None = option(None, "torch.set_num_threads (default: torch's)")
    out: Path = support.RESULTS / "ask.json"


def summary(values: list[float]) -> dict:
    return {"n": len(values), **support.latency_ms(values)}


def main(argv=None) -> dict:
    from tqdm import tqdm

    args = support.parse_args(BenchArgs, argv, __doc__)
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
        "ratio_p95": round(support.percentile(ask_t, 0.95) / support.percentile(raw_t, 0.95), 2),
        "questions_with_retrieval": {
            "ask": summary(ask_r), "raw_chroma": summary(raw_r),
            "ratio_p50": round(statistics.median(ask_r) / statistics.median(raw_r), 2),
            "ratio_p95": round(support.percentile(ask_r, 0.95) / support.percentile(raw_r, 0.95), 2),
        } if ask_r else None,
        "machine": support.machine(),
        "args": {k: str(v) for k, v in asdict(args).items()},
    }
    support.write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
