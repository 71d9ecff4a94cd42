"""Classifier vs the plain `transformers.pipeline("image-classification")`, same model, same process.

    python benchmarks/bench_classifier.py [--model DIR] [--n_single 24] [--n_batch 32]

Measures, on the same real photos (read from files by both, decoding included):
- batch 1: throughput (photos/s) and latency p50/p95, photos interleaved between the methods so
  that load from other processes hits both alike;
- batch 16: throughput;
- top-1 agreement of every Classifier backend with the pipeline;
- parity of every Classifier backend with float32 ONNX on what the replies show (the verdict and the
  species named as most likely: vision_model.metrics.shown_answers), the figure `auto` serves int8 on;
- which backend the default (`auto`) serves for this model.
Writes benchmarks/results/classifier.json.

Without --model: the bundled release if it exists, else a stand-in built once in var/bench/:
the offline dinov2-small-imgfocus backbone with a random 261-class head (float32).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import ROOT, SHARED, option

STAND_IN_DIR = ROOT / "var" / "bench" / "dinov2-small-random261"


@dataclass
class BenchArgs(support.PhotoArgs):  # --images
    model: str | None = option(None, "model directory (default: the bundled release, else the stand-in)")
    n_single: int = option(24, "photos timed one by one (batch 1)")
    n_batch: int = option(32, "photos timed in batches")
    batch_size: int = 16
    backends: str = option("onnx,onnx-int8,openvino,openvino-bf16", "Classifier backends to compare with the pipeline")
    threads: str = option("0,1", "thread settings to run, each for torch AND ONNX Runtime; 0 = library default")
    out: str = str(support.RESULTS / "classifier.json")


def build_stand_in(path: Path = STAND_IN_DIR) -> Path:
    """The offline backbone + a random 261-class head, saved once under var/bench/."""
    if (path / "config.json").is_file():
        return path
    import shutil

    import torch
    from transformers import Dinov2ForImageClassification

    weights = SHARED / "weights" / "dinov2-small-imgfocus"
    labels = [line.strip() for line in (ROOT / "docs" / "vision_labels_ge2.txt").read_text().splitlines()]
    labels = [label for label in labels if label]
    torch.manual_seed(0)
    model = Dinov2ForImageClassification.from_pretrained(
        weights,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=torch.float32,
    )
    model.save_pretrained(path)
    shutil.copy(weights / "preprocessor_config.json", path / "preprocessor_config.json")
    return path


def pick_photos(images_dir: Path, n: int) -> list[str]:
    """n photos spread over the species folders, deterministic."""
    paths = support.photo_paths(images_dir, n)
    if not paths:
        raise SystemExit(f"no photos under {images_dir}")
    return [str(p) for p in paths]


def summarise(latencies: list[float]) -> dict:
    return {
        "photos": len(latencies),
        "throughput_per_s": round(len(latencies) / sum(latencies), 3),
        "latency_p50_ms": round(1000 * support.percentile(latencies, 0.50), 1),
        "latency_p95_ms": round(1000 * support.percentile(latencies, 0.95), 1),
    }


def compare(args: BenchArgs, model_dir: Path, pipe, threads: int, photos_single, photos_batch) -> dict:
    """One full comparison with `threads` threads for torch and ONNX Runtime (0: their defaults)."""
    import numpy as np
    import torch

    from vision_model.classifier import (
        Classifier,
        auto_backends,
        default_threads,
        onnx_cache_dir,
        weights_fingerprint,
    )

    torch.set_num_threads(threads or default_threads())
    load_seconds = {}
    classifiers = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        cached = (onnx_cache_dir() / f"{weights_fingerprint(model_dir)}.onnx").is_file()
        t0 = time.perf_counter()
        classifiers[backend] = Classifier.load(
            model_dir, backend=backend, threads=threads or None, batch_size=args.batch_size
        )
        load_seconds[backend + (" (onnx cached)" if cached else " (incl. onnx export)")] = (
            time.perf_counter() - t0
        )

    def run_pipe(items):
        out = pipe(items if len(items) > 1 else items[0], batch_size=len(items), top_k=1)
        out = [out] if len(items) == 1 else out
        return [o[0]["label"] for o in out]

    def run_clf(clf, items):
        return [clf.identify(items)] if len(items) == 1 else clf.identify_each(items)

    methods = {
        "pipeline": run_pipe,
        **{k: (lambda items, c=c: run_clf(c, items)) for k, c in classifiers.items()},
    }
    for run in methods.values():  # warm-up (first-call allocations, lazy inits)
        run(photos_single[:1])
        run(photos_single[:2])

    latencies = {name: [] for name in methods}
    answers = {name: [] for name in methods}  # the pipeline's labels; the Classifier's Identifications
    for photo in tqdm(photos_single, desc=f"threads={threads} batch 1", unit="photo"):
        for name, run in methods.items():  # interleaved: background load hits every method alike
            t0 = time.perf_counter()
            answers[name].extend(run([photo]))
            latencies[name].append(time.perf_counter() - t0)
    top1 = {name: [a if isinstance(a, str) else a.label for a in got] for name, got in answers.items()}
    # What each backend's reply tells, photo by photo (compared with float32 ONNX's below).
    shown = {name: [a.shown_answer() for a in answers[name]] for name in classifiers}

    batch_seconds = {name: 0.0 for name in methods}
    chunks = [photos_batch[i : i + args.batch_size] for i in range(0, len(photos_batch), args.batch_size)]
    for chunk in tqdm(chunks, desc=f"threads={threads} batch {args.batch_size}", unit="batch"):
        for name, run in methods.items():
            t0 = time.perf_counter()
            got = run(chunk)
            batch_seconds[name] += time.perf_counter() - t0
            if name in shown:  # parity is counted on every photo, batch 1 and batched
                shown[name].extend(a.shown_answer() for a in got)

    base_single = summarise(latencies["pipeline"])["throughput_per_s"]
    base_batch = len(photos_batch) / batch_seconds["pipeline"]
    results = {}
    for name in methods:
        single = summarise(latencies[name])
        batch_tp = len(photos_batch) / batch_seconds[name]
        results[name] = {
            "batch_1": single,
            f"batch_{args.batch_size}": {"photos": len(photos_batch), "throughput_per_s": round(batch_tp, 3)},
            "speedup_vs_pipeline_batch_1": round(single["throughput_per_s"] / base_single, 2),
            f"speedup_vs_pipeline_batch_{args.batch_size}": round(batch_tp / base_batch, 2),
            "top1_agreement_with_pipeline": round(
                float(np.mean([a == b for a, b in zip(top1[name], top1["pipeline"], strict=True)])), 4
            ),
        }
        if name in shown and "onnx" in shown:
            results[name]["shown_answer_parity_with_onnx"] = round(
                float(np.mean([a == b for a, b in zip(shown[name], shown["onnx"], strict=True)])), 4
            )
            results[name]["photos_compared"] = len(shown[name])
        if name in classifiers and classifiers[name].photos_rerun:  # a checked backend: how often float32 ran too
            results[name]["photos_run_again_in_float32"] = (
                f"{classifiers[name].photos_rerun} of {classifiers[name].photos_run}")
    return {
        "threads": threads or f"default ({default_threads()})",
        "default_backend": auto_backends(model_dir)[0],  # what `auto` serves (where it loads)
        "load_seconds": {k: round(v, 2) for k, v in load_seconds.items()},
        "results": results,
    }


def main(argv=None) -> dict:
    from transformers import pipeline

    args = support.parse_args(BenchArgs, argv, __doc__)
    model_dir = support.choose_model(args.model)[0] or build_stand_in()
    photos_single = pick_photos(Path(args.images), args.n_single)
    photos_batch = pick_photos(Path(args.images), args.n_batch)
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    import torch

    # float32 like the Classifier: transformers 5 would otherwise keep fp16 release weights in
    # fp16 on CPU (slow, and different numbers).
    pipe = pipeline("image-classification", model=str(model_dir), device="cpu", dtype=torch.float32)
    pipeline_load = time.perf_counter() - t0
    runs = [
        compare(args, model_dir, pipe, int(t), photos_single, photos_batch)
        for t in args.threads.split(",")
        if t.strip()
    ]
    report = {
        "what": "vision_model.Classifier vs transformers.pipeline('image-classification'), same model, same process",
        "model_dir": str(model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir),
        "args": asdict(args) | {"images": "shared/data/images", "out": None},
        "machine": support.machine(
            load_average_before=[round(x, 2) for x in load_before],
            load_average_after=[round(x, 2) for x in os.getloadavg()],
            note="shared machine: other processes ran during the measurement (see load averages)",
        ),
        "pipeline_load_seconds": round(pipeline_load, 2),
        "runs": runs,
    }
    support.write_result(args.out, report, echo=False)
    print(json.dumps({"machine": report["machine"], "runs": report["runs"]}, indent=2))
    return report


if __name__ == "__main__":
    main()
