"""`python -m vision_model evaluate --model DIR --out reports/NAME`: held-out-style report of a model.

On the test split (photos never used for training, temperature or thresholds):
- top-1 / top-3 / macro-F1 for the main classes and, separately, for the few-shot classes;
- the safety figures with the production rule (verdict.decide + the model's safety.json):
  dangerous errors (a photo of a species whose catalog edibility is not plain "edible", or of
  an unknown species, given an "edible" verdict), poison cost per photo
  (100 x dangerous + 1 x edible photos not called edible) / N, abstention rate - on the test
  photos, and on a simulated open set (test photos of few-shot species with their own class
  removed, plus synthetic non-mushroom images);
- ECE before / after temperature scaling;
- per-class CSV, confusion matrix (main classes), risk-coverage and reliability plots (PNG),
  and metrics.json, all in the output directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_model.calibrate import (
    PROJECT_ROOT,
    build_tuning_set,
    catalog_edibility,
    evaluate_with_decide,
    expected_calibration_error,
    load_split,
    model_logits,
    nll,
    synthetic_images,
)
from vision_model.verdict import SafetyConfig, softmax

log = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    model: str = field(
        default=str(PROJECT_ROOT / "vision_model" / "release"), metadata={"help": "model directory"}
    )
    out: str = field(default=str(PROJECT_ROOT / "reports" / "vision"), metadata={"help": "report directory"})
    data_dir: str = field(default=str(PROJECT_ROOT.parent / "shared" / "data" / "images"))
    splits: str | None = field(default=None, metadata={"help": "splits.json of the training run"})
    split: str = field(default="test", metadata={"help": "which split to evaluate (test or val)"})
    seed: int = 0
    min_photos: int = 2
    main_min_photos: int = field(
        default=50, metadata={"help": "classes with at least this many photos are 'main'"}
    )
    synthetic_images: int = 64
    backend: str = "torch"
    cache_dir: str = field(default=str(PROJECT_ROOT / "var" / "cache" / "vision-logits"))


def _topk_hits(probs: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[1])
    return (np.argsort(-probs, axis=1)[:, :k] == targets[:, None]).any(1)


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def group_metrics(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, class_ids: list[int]) -> dict:
    from sklearn.metrics import f1_score

    pred = probs.argmax(1)
    return {
        "n": int(mask.sum()),
        "top1": _mean((pred == targets)[mask]),
        "top3": _mean(_topk_hits(probs, targets, 3)[mask]),
        "macro_f1": float(f1_score(targets, pred, labels=class_ids, average="macro", zero_division=0))
        if class_ids
        else None,
    }


def plot_confusion(probs, targets, class_ids, labels, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = probs.argmax(1)
    names = [labels[i] for i in class_ids] + ["(other)"]
    pos = {c: i for i, c in enumerate(class_ids)}
    mat = np.zeros((len(class_ids), len(names)), dtype=int)
    for t, p in zip(targets, pred, strict=True):
        if t in pos:
            mat[pos[t], pos.get(p, len(class_ids))] += 1
    fig, ax = plt.subplots(figsize=(11, 9))
    if not class_ids:  # no main classes in this data: an empty, labelled figure
        ax.text(0.5, 0.5, "no main classes", ha="center", va="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    ax.imshow(mat / np.maximum(1, mat.sum(1, keepdims=True)), cmap="Blues", vmin=0, vmax=1)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if mat[i, j]:
                ax.text(j, i, str(mat[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_ids)), names[:-1], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix, main classes (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_risk_coverage(probs, targets, path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = probs.max(1)
    order = np.argsort(-conf)
    errors = (probs.argmax(1) != targets)[order]
    coverage = np.arange(1, len(order) + 1) / max(1, len(order))
    risk = np.cumsum(errors) / np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(coverage, risk)
    ax.set_xlabel("coverage (share of photos answered, most confident first)")
    ax.set_ylabel("top-1 error among answered")
    ax.set_title("Risk-coverage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    aurc = float(risk.mean()) if len(risk) else None
    return {"aurc": aurc}


def plot_reliability(probs_before, probs_after, targets, path: Path, bins: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    edges = np.linspace(0, 1, bins + 1)
    for probs, name in ((probs_before, "raw (T=1)"), (probs_after, "calibrated")):
        conf, correct = probs.max(1), probs.argmax(1) == targets
        xs, ys = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            in_bin = (conf > lo) & (conf <= hi)
            if in_bin.any():
                xs.append(conf[in_bin].mean())
                ys.append(correct[in_bin].mean())
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: EvaluateArguments) -> dict:
    from vision_model.release import read_labels, read_train_info, trained_splits

    model_dir, out = Path(args.model), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A refit learnt from the validation photos, a final fit from the test photos too: their
    # figures on those photos are training figures, and the report says so (export refuses them).
    held_out = args.split not in trained_splits(read_train_info(model_dir))
    if not held_out:
        log.warning("%s was trained on the %s photos: these are training figures, not held-out ones", model_dir, args.split)
    labels = read_labels(model_dir)
    index = {label: i for i, label in enumerate(labels)}
    safety = SafetyConfig.load(model_dir)
    edibility = catalog_edibility()
    every = {
        s: load_split(args.data_dir, args.splits, args.seed, args.min_photos, s)
        for s in ("train", "val", "test")
    }
    counts: dict[str, int] = {}
    for items in every.values():
        for _, lab in items:
            counts[lab] = counts.get(lab, 0) + 1
    items = [(p, lab) for p, lab in every[args.split] if lab in index]
    unknown_labels = sorted({lab for _, lab in every[args.split] if lab not in index})
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    logits = model_logits(
        model_dir, [p for p, _ in items], [str(p) for p, _ in items], cache_dir, args.backend
    ).astype(np.float64)
    targets = np.array([index[lab] for _, lab in items])
    main_ids = sorted(index[lab] for lab in index if counts.get(lab, 0) >= args.main_min_photos)
    few_ids = sorted(set(targets.tolist()) - set(main_ids))
    is_main = np.isin(targets, main_ids)
    probs_raw, probs = softmax(logits), softmax(logits, safety.temperature)

    synth = synthetic_images(args.synthetic_images, seed=args.seed + 1)  # not the images tuned on
    synth_logits = model_logits(
        model_dir,
        synth,
        [f"synthetic:{args.seed + 1}:{i}" for i in range(len(synth))],
        cache_dir,
        args.backend,
    ).astype(np.float64)
    fewshot_labels = {labels[i] for i in few_ids}
    tuning = build_tuning_set(
        logits, [lab for _, lab in items], labels, edibility, fewshot_labels, synth_logits
    )
    kinds = np.array(tuning.kind)
    safety_figures = {}
    for name, mask in (
        ("photos", kinds == "val"),
        ("open_set", kinds != "val"),
        ("all", np.ones(len(kinds), bool)),
    ):
        result = evaluate_with_decide(
            tuning.logits[mask],
            [t for t, m in zip(tuning.truth, mask, strict=True) if m],
            labels,
            edibility,
            safety,
        )
        result.pop("verdicts")
        safety_figures[name] = result

    metrics = {
        "model": str(model_dir),
        "version": safety.version,
        "split": args.split,
        "held_out": held_out,
        "n": len(items),
        "main": group_metrics(probs, targets, is_main, main_ids),
        "fewshot": group_metrics(probs, targets, ~is_main, few_ids),
        "overall_top1": _mean(probs.argmax(1) == targets),
        "calibration": {
            "temperature": safety.temperature,
            "ece_before": expected_calibration_error(probs_raw, targets),
            "ece_after": expected_calibration_error(probs, targets),
            "nll_before": nll(logits, targets),
            "nll_after": nll(logits, targets, safety.temperature),
        },
        "safety": safety_figures,
        "open_set_examples": {k: int((kinds == k).sum()) for k in ("open_set_species", "synthetic")},
        "labels_in_catalog": sum(edibility(lab) != "unknown" for lab in labels),
        "labels_not_in_model": unknown_labels,
    }
    metrics["risk_coverage"] = plot_risk_coverage(probs, targets, out / "risk_coverage.png")
    plot_confusion(probs, targets, main_ids, labels, out / "confusion_main.png")
    plot_reliability(probs_raw, probs, targets, out / "reliability.png")

    pred = probs.argmax(1)
    with (out / "per_class.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["label", "group", "edibility", "n_photos_total", "n_eval", "top1", "precision", "recall", "f1"]
        )
        for cid in sorted(set(targets.tolist())):
            t, p = targets == cid, pred == cid
            tp = int((t & p).sum())
            prec = tp / p.sum() if p.sum() else 0.0
            rec = tp / t.sum()
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            writer.writerow(
                [
                    labels[cid],
                    "main" if cid in main_ids else "fewshot",
                    edibility(labels[cid]),
                    counts.get(labels[cid], 0),
                    int(t.sum()),
                    f"{rec:.3f}",
                    f"{prec:.3f}",
                    f"{rec:.3f}",
                    f"{f1:.3f}",
                ]
            )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # Printed (not logged): this summary is the command's output.
    print(
        f"{args.split}: main top-1 {metrics['main']['top1'] or 0:.3f} top-3 {metrics['main']['top3'] or 0:.3f} | "
        f"few-shot top-1 {metrics['fewshot']['top1'] or 0:.3f} | dangerous errors "
        f"{safety_figures['all']['dangerous_errors']} | cost {safety_figures['all']['poison_cost']:.4f} | "
        f"abstain {safety_figures['all']['abstention_rate']:.3f} -> {out}"
        + ("" if held_out else f" (NOT held out: the model was trained on these {args.split} photos)")
    )
    return metrics


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from vision_model.train import add_dataclass_arguments

    parser = parser or argparse.ArgumentParser(prog="python -m vision_model evaluate")
    return add_dataclass_arguments(parser, EvaluateArguments)


if __name__ == "__main__":
    from vision_model.train import dataclass_from_namespace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(dataclass_from_namespace(EvaluateArguments, build_parser().parse_args()))
