"""Ingest throughput and cold starts, against plain sentence-transformers, side by side in one process.

Baseline: today's plain sentence-transformers float32 `encode` (batch 32, normalised) of a sample of the
same passages, half measured before and half after the builds, so drifting machine load hits both sides.
Measured against it, as passages in the new index per second of wall (and of process CPU) time:
- first:    a first build of catalog + guides into a fresh Chroma (what the console does on a new machine);
  the embedding model's own share is timed apart, so the rest (loading, chunking, Chroma writes, the
  check) shows too;
- later:    the guides arrive after a catalog-only first build (../shared linked later): the catalog's
  vectors are taken over from the serving version, only the guides are embedded;
- edited:   one guide edited, everything else taken over.
Cold starts: `python -m knowledge_base ask --json "is the death cap deadly?"` in a new process (median of
3, after one untimed run) on the first build's index, side by side with the same command in a checkout of
the code before this work (`--before`, a git revision: sentence-transformers queries, the catalog parsed
in Python, BM25 rebuilt from the collection), and `python -m vision_model identify` of one photo.

    python benchmarks/bench_ingest.py [--guides DIR] [--raw-fraction 0.25] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "is the death cap deadly?"


@dataclass
class BenchArgs:
    guides: Path | None = option(None, "guides folder (default: GUIDES_DIR)")
    raw_fraction: float = option(0.25, "share of the passages in the sentence-transformers baseline")
    cold_repeats: int = option(3, "timed runs of each cold-start command")
    photos: Path | None = option(None, "a folder of photos for the cold vision_model identify")
    before: str = option("756ed74", "git revision whose `knowledge_base ask` is the cold-start baseline")
    out: Path = support.RESULTS / "ingest.json"


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


class ModelTimer:
    """Wraps the encoder to add up the time spent in the embedding model itself."""

    def __init__(self, encoder):
        self.encoder, self.seconds, self.passages = encoder, 0.0, 0
        self._encode = encoder.encode
        encoder.encode = self

    def __call__(self, texts, batch_size):
        started = time.perf_counter()
        try:
            return self._encode(texts, batch_size)
        finally:
            self.seconds += time.perf_counter() - started
            self.passages += len(texts)

    def reset(self):
        self.seconds, self.passages = 0.0, 0


def build(settings, timer: ModelTimer, **kwargs) -> dict:
    from ingest import pipeline

    timer.reset()
    with Clock() as clock:
        report = pipeline.reingest(settings, **kwargs)
    if not report.ok:
        raise SystemExit(f"ingest failed: {report.error}")
    return {
        "chunks": report.chunks,
        "embedded": timer.passages,
        "reused": report.reused_embeddings,
        "wall_s": round(clock.wall, 2),
        "cpu_s": round(clock.cpu, 2),
        "chunks_per_s": round(report.chunks / clock.wall, 2),
        "chunks_per_cpu_s": round(report.chunks / clock.cpu, 2),
        "model_s": round(timer.seconds, 3),
        "outside_model_s": round(clock.wall - timer.seconds, 2),
        "stage_timings_s": report.timings,
    }


def cold_runs(command: list[str], env: dict, repeats: int, cwd: Path = ROOT) -> dict:
    """Median wall time of `command` in new processes, after one untimed run (caches, page cache)."""
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=600)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return {"median_s": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times]}


def main(argv=None) -> int:
    args = support.parse_args(BenchArgs, argv, __doc__)
    from bot.settings import get_settings
    from ingest.chunking import chunk_documents
    from ingest.loaders import catalog_documents, guide_files, load_paths
    from knowledge_base.catalog import default_catalog
    from knowledge_base.embeddings import PRECISIONS, embedding_id, load_encoder, load_model

    settings = get_settings()
    guides = Path(args.guides or settings.guides_dir)
    if not guides.is_dir():
        print(f"guides {guides} not found: nothing to benchmark", file=sys.stderr)
        return 1
    catalog = default_catalog()
    chunks = chunk_documents(load_paths([guides]).documents + catalog_documents(catalog), catalog)
    step = max(1, round(1 / args.raw_fraction))
    sample = [c.page_content for c in chunks[::step]]
    before, after = sample[::2], sample[1::2]

    plain = load_model()  # the baseline: sentence-transformers, float32, as the ingest used until now

    def baseline(texts):
        return plain.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    baseline(sample[:8])
    timer = ModelTimer(load_encoder())  # the default backend (ONNX), loaded and warmed untimed
    timer(sample[:8], 32)
    load_start = os.getloadavg()

    with Clock() as raw1:
        baseline(before)
    results: dict = {}
    encoders: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def at(name: str):
            return settings.model_copy(update={"chroma_path": tmp / name / "chroma", "chroma_url": None,
                                               "ingest_lock_file": tmp / name / "lock"})

        first = at("first")
        results["first"] = build(first, timer, sources=[guides], force=True, catalog=catalog)
        later = at("later")
        build(later, timer, sources=[], catalog=catalog)  # the catalog-only first start (untimed)
        results["later"] = build(later, timer, sources=[guides], catalog=catalog)
        edited_guides = tmp / "guides"
        shutil.copytree(guides, edited_guides)
        victim = min(guide_files(edited_guides), key=lambda p: p.stat().st_size)  # edit the smallest guide
        victim.chmod(0o644)
        victim.write_text(victim.read_text(encoding="utf-8", errors="replace")
                          + "\n\nA note added by the benchmark about the volva of Amanita phalloides.\n",
                          encoding="utf-8")
        results["edited"] = build(later, timer, sources=[edited_guides], catalog=catalog)
        # Each precision's encoder alone on the baseline's passages: the default against the earlier ones.
        for precision in PRECISIONS:
            encoder = load_encoder(precision=precision)
            encoder.encode(sample[:8], 32)  # loaded (and made, once) untimed
            with Clock() as alone:
                encoder.encode(sample, 32)
            encoders[precision] = {"backend": type(encoder).__name__, "embedding_id": embedding_id(precision),
                                   "chunks_per_s": round(len(sample) / alone.wall, 2)}
        with Clock() as raw2:
            baseline(after)

        env = {**os.environ, "CHROMA_PATH": str(first.chroma_path), "INGEST_LOCK_FILE": str(tmp / "first" / "lock"),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        ask = [sys.executable, "-m", "knowledge_base", "ask", "--json", QUESTION]
        cold = {"knowledge_base_ask": cold_runs(ask, env, args.cold_repeats)}
        before = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            cold["knowledge_base_ask_before"] = cold_runs(ask, env, args.cold_repeats, cwd=before)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
        cold["ratio_before_over_now"] = round(cold["knowledge_base_ask_before"]["median_s"]
                                              / cold["knowledge_base_ask"]["median_s"], 2)
        photos = args.photos or Path(settings.guides_dir).parent / "images" / "amanita_muscaria"
        photo = next(iter(sorted(photos.glob("*.jpg"))), None) if photos.is_dir() else None
        if photo is not None:
            cold["vision_model_identify"] = cold_runs([sys.executable, "-m", "vision_model", "identify", str(photo)],
                                                      env, args.cold_repeats)

    raw_wall, raw_cpu = raw1.wall + raw2.wall, raw1.cpu + raw2.cpu
    base = {"passages": len(sample), "wall_s": round(raw_wall, 2), "cpu_s": round(raw_cpu, 2),
            "chunks_per_s": round(len(sample) / raw_wall, 2), "chunks_per_cpu_s": round(len(sample) / raw_cpu, 2)}
    for result in results.values():
        result["ratio_over_baseline_wall"] = round(result["chunks_per_s"] / base["chunks_per_s"], 2)
        result["ratio_over_baseline_cpu"] = round(result["chunks_per_cpu_s"] / base["chunks_per_cpu_s"], 2)
        # The embedding model alone, per passage it embedded, against the baseline's encode.
        if result["embedded"] and result["model_s"] > 0:
            result["model_ratio_over_baseline"] = round(
                (result["embedded"] / result["model_s"]) / base["chunks_per_s"], 2)
    for row in encoders.values():
        row["ratio_over_baseline"] = round(row["chunks_per_s"] / base["chunks_per_s"], 2)
    result = {
        "what": "knowledge-base builds (catalog + guides) vs plain sentence-transformers float32 encode; cold starts",
        "args": {k: str(v) for k, v in asdict(args).items()},
        "machine": support.machine(loadavg_start=load_start, loadavg_end=os.getloadavg()),
        "embedding_backend": timer.encoder.name,
        "embedding_id": embedding_id(),
        "encoders_alone": encoders,
        "baseline_sentence_transformers_fp32": base,
        "builds": results,
        "cold_start": cold,
    }
    support.write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
