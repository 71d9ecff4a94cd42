"""Ingest throughput vs. raw embedding throughput, side by side in one process.

End-to-end: `ingest.pipeline.reingest(force=True)` of the real guides + the species catalog into
a fresh temporary Chroma (load, chunk, embed, write, check, switch).
Baseline: `MiniLMEmbeddings.embed_documents` alone on the same chunk texts (a sample of them,
half measured before and half after the ingest, so drifting machine load hits both sides).
Both wall-clock and process-CPU throughput are reported: on a shared machine the CPU-time ratio
is the stable one. The model is loaded (and warmed) before anything is timed.

    python benchmarks/bench_ingest.py [--guides DIR] [--raw-fraction 0.25] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option


@dataclass
class BenchArgs:
    guides: Path | None = option(None, "guides folder or one guide file (default: GUIDES_DIR)")
    raw_fraction: float = option(0.25, "share of chunks in the raw-embedding baseline")
    no_catalog: bool = option(False, "guides only")
    catalog_limit: int = option(0, "only the first N catalog species (0: all; a quick run on a busy machine)")
    out: Path = support.RESULTS / "ingest.json"


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def main(argv=None) -> int:
    args = support.parse_args(BenchArgs, argv, __doc__)
    from bot.settings import get_settings
    from ingest import pipeline
    from ingest.chunking import chunk_documents
    from ingest.loaders import catalog_documents, load_paths
    from knowledge_base.catalog import Catalog, default_catalog
    from knowledge_base.embeddings import default_embeddings

    settings = get_settings()
    guides = args.guides or settings.guides_dir
    if not Path(guides).exists():
        print(f"guides {guides} not found: nothing to benchmark", file=sys.stderr)
        return 1
    catalog = default_catalog()
    if args.catalog_limit > 0:
        catalog = Catalog({label: catalog.get(label) for label in catalog.labels[: args.catalog_limit]})

    # The same chunk texts the pipeline will embed (chunking is deterministic).
    loaded = load_paths([guides])
    docs = loaded.documents + ([] if args.no_catalog else catalog_documents(catalog))
    chunks = chunk_documents(docs, catalog)
    step = max(1, round(1 / args.raw_fraction)) if args.raw_fraction > 0 else len(chunks)
    sample = [c.page_content for c in chunks[::step]]
    before, after = sample[::2], sample[1::2]

    embeddings = default_embeddings()
    embeddings.embed_documents([c.page_content for c in chunks[:8]])  # load + warm up, untimed
    load_start = os.getloadavg()

    with Clock() as raw1:
        embeddings.embed_documents(before)
    with tempfile.TemporaryDirectory() as tmp:
        bench_settings = settings.model_copy(update={"chroma_path": Path(tmp) / "chroma", "chroma_url": None})
        with Clock() as ingest:
            report = pipeline.reingest(bench_settings, sources=[guides], force=True,
                                       include_catalog=not args.no_catalog, catalog=catalog)
    with Clock() as raw2:
        embeddings.embed_documents(after)
    if not report.ok:
        print(f"ingest failed: {report.error}", file=sys.stderr)
        return 1

    raw_wall, raw_cpu = raw1.wall + raw2.wall, raw1.cpu + raw2.cpu
    raw_chars = sum(len(t) for t in sample)
    guide_chunks = sum(n for name, n in report.chunks_per_source.items() if name != "catalog")
    guide_tagged = sum(1 for c in chunks if c.metadata["kind"] == "guide" and c.metadata["species"])
    result = {
        "what": "end-to-end reingest (load+chunk+embed+write+check+switch) vs MiniLM embed_documents alone",
        "args": {k: str(v) for k, v in asdict(args).items()},
        "machine": support.machine(loadavg_start=load_start, loadavg_end=os.getloadavg()),
        "ingest": {
            "chunks": report.chunks,
            "chars": report.chars,
            "wall_s": round(ingest.wall, 2),
            "cpu_s": round(ingest.cpu, 2),
            "chunks_per_s": round(report.chunks / ingest.wall, 2),
            "chars_per_s": round(report.chars / ingest.wall, 1),
            "chunks_per_cpu_s": round(report.chunks / ingest.cpu, 2),
            "stage_timings_s": report.timings,
            "chunks_per_source": report.chunks_per_source,
            "species_tagged_fraction": round(report.species_tagged / report.chunks, 3),
            "guide_species_tagged_fraction": round(guide_tagged / guide_chunks, 3) if guide_chunks else 0.0,
            "catalog_species": report.catalog_species,
        },
        "raw_embedding": {
            "chunks": len(sample),
            "chars": raw_chars,
            "wall_s": round(raw_wall, 2),
            "cpu_s": round(raw_cpu, 2),
            "chunks_per_s": round(len(sample) / raw_wall, 2),
            "chars_per_s": round(raw_chars / raw_wall, 1),
            "chunks_per_cpu_s": round(len(sample) / raw_cpu, 2),
        },
    }
    result["ratio_ingest_over_raw_wall"] = round(
        result["ingest"]["chunks_per_s"] / result["raw_embedding"]["chunks_per_s"], 3)
    result["ratio_ingest_over_raw_cpu"] = round(
        result["ingest"]["chunks_per_cpu_s"] / result["raw_embedding"]["chunks_per_cpu_s"], 3)
    support.write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
