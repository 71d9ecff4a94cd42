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

import csv
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_model import cli, tracking
from vision_model.data import MAIN_CLASS_MIN_PHOTOS, file_sha256, load_splits
from vision_model.dataset import dataset_version
from vision_model.heldout import (
    HeldOutArguments,
    LearntPhotos,
    build_tuning_set,
    learnt_photos,
    photo_logits,
    synthetic_logits,
)
from vision_model.metrics import (
    danger_by_group,
    evaluate_with_decide,
    expected_calibration_error,
    group_metrics,
    mean_or_none,
    nll,
    reliability_bins,
    risk_coverage,
    shown_answers,
)
from vision_model.release import read_labels, read_train_info, trained_splits
from vision_model.verdict import SafetyConfig, output_embedding, softmax

log = logging.getLogger(__name__)


@dataclass
class EvaluateArguments(HeldOutArguments):
    out: str = field(default=str(cli.REPORTS_DIR / "vision"), metadata={"help": "report directory"})
    split: str = field(default="test", metadata={"help": "which split to evaluate (test or val)"})
    parity_backend: str = field(
        default="openvino-bf16",
        metadata={"help": "also run the photos through this inference backend and report how often it gives the "
                  "same reply (the default: bfloat16 checked against float32, what `auto` serves on a CPU with "
                  "bfloat16 units; onnx-int8: int8 becomes the default only at 100 %%); '' skips it"},
    )
    allow_learnt_photos: bool = field(
        default=False,
        metadata={
            "help": "evaluate even on photos the model learnt from (a final fit's sanity check): the report "
            "says NOT held out and export refuses it. Without it, such photos are refused"
        },
    )
    main_min_photos: int = field(
        default=MAIN_CLASS_MIN_PHOTOS, metadata={"help": "classes with at least this many photos are 'main'"}
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_confusion(probs, targets, class_ids, labels, path: Path) -> None:
    pred = probs.argmax(1)
    names = [labels[i] for i in class_ids] + ["(other)"]
    pos = {c: i for i, c in enumerate(class_ids)}
    mat = np.zeros((len(class_ids), len(names)), dtype=int)
    for t, p in zip(targets, pred, strict=True):
        if t in pos:
            mat[pos[t], pos.get(p, len(class_ids))] += 1
    fig, ax = _pyplot().subplots(figsize=(11, 9))
    if not class_ids:  # no main classes in this data: an empty, labelled figure
        ax.text(0.5, 0.5, "no main classes", ha="center", va="center")
        _save(fig, path)
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
    _save(fig, path)


def plot_risk_coverage(probs, targets, path: Path) -> dict:
    coverage, risk, aurc = risk_coverage(probs, targets)
    fig, ax = _pyplot().subplots(figsize=(6, 4.5))
    ax.plot(coverage, risk)
    ax.set_xlabel("coverage (share of photos answered, most confident first)")
    ax.set_ylabel("top-1 error among answered")
    ax.set_title("Risk-coverage")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return {"aurc": aurc}


def plot_reliability(probs_before, probs_after, targets, path: Path) -> None:
    fig, ax = _pyplot().subplots(figsize=(5.5, 5))
    for probs, name in ((probs_before, "raw (T=1)"), (probs_after, "calibrated")):
        bins = reliability_bins(probs, targets)
        ax.plot([conf for _, conf, _ in bins], [acc for _, _, acc in bins], marker="o", label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability")
    ax.legend()
    _save(fig, path)


def backend_parity(model_dir, items, logits, decided, labels, edibility, safety, args, cache_dir) -> dict | None:
    """How often `parity_backend` tells the user the same as the evaluated backend: the same verdict shown and
    the same species named as "most likely" (metrics.shown_answers). `same_top1_and_verdict` is the stricter
    count that also compares the arg-max of photos the reply shows only as unreliable guesses."""
    if not args.parity_backend or args.parity_backend == args.backend:
        return None
    other = photo_logits(model_dir, items, cache_dir, args.parity_backend)
    other_decided = evaluate_with_decide(other, ["unknown"] * len(other), labels, edibility, safety)
    shown = shown_answers(softmax(logits, safety.temperature), decided["verdicts"], decided["abstentions"], labels)
    other_shown = shown_answers(softmax(other, safety.temperature), other_decided["verdicts"],
                                other_decided["abstentions"], labels)
    same = np.array([a == b for a, b in zip(shown, other_shown, strict=True)], dtype=bool)
    strict = (other.argmax(1) == logits.argmax(1)) & (
        np.array(other_decided["verdicts"]) == np.array(decided["verdicts"]))
    return {"backend": args.parity_backend, "against": args.backend, "n": len(items), "same": int(same.sum()),
            "rate": mean_or_none(same), "same_top1_and_verdict": int(strict.sum()),
            "compared": "the verdict shown and the species named as most likely"}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def check_held_out(model_dir: Path, args: EvaluateArguments, items, hashes: list[str]) -> bool:
    """Whether the model never learnt from these photos: by their hashes when it keeps the list of
    photos it learnt from (any path, any split seed), else by its splits (a refit learnt val, a
    final fit test too). Photos it learnt from are refused unless --allow_learnt_photos."""
    learnt = learnt_photos(model_dir, items, hashes)
    if learnt is None:
        held_out = args.split not in trained_splits(read_train_info(model_dir))
        reason = f"it was trained on the {args.split} photos"
    else:
        held_out = not learnt
        reason = f"it learnt from {len(learnt)} of these {len(items)} photos (e.g. {learnt[0]})" if learnt else ""
    if held_out:
        return True
    if not args.allow_learnt_photos:
        raise LearntPhotos(
            f"refusing to evaluate {model_dir} on its training photos: {reason}. Evaluate on photos it "
            "never saw, or pass --allow_learnt_photos for training figures (never for a model card)"
        )
    log.warning("%s: %s: these are training figures, not held-out ones", model_dir, reason)
    return False


def main(args: EvaluateArguments) -> dict:
    from vision_model.classifier import catalog_edibility

    model_dir, out = Path(args.model), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(model_dir)
    index = {label: i for i, label in enumerate(labels)}
    safety = SafetyConfig.load(model_dir)
    edibility = catalog_edibility()
    every = load_splits(args.data_dir, args.splits, args.seed, args.min_photos)
    counts = Counter(lab for items in every.values() for _, lab in items)
    items = [(p, lab) for p, lab in every[args.split] if lab in index]
    hashes = [file_sha256(p) for p, _ in items]  # read once: the learnt-photo check and the photo set
    held_out = check_held_out(model_dir, args, items, hashes)
    unknown_labels = sorted({lab for _, lab in every[args.split] if lab not in index})
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    logits = photo_logits(model_dir, items, cache_dir, args.backend)
    targets = np.array([index[lab] for _, lab in items])
    main_ids = sorted(index[lab] for lab in index if counts[lab] >= args.main_min_photos)
    few_ids = sorted(set(targets.tolist()) - set(main_ids))
    is_main = np.isin(targets, main_ids)
    probs_raw, probs = softmax(logits), softmax(logits, safety.temperature)

    # seed + 1: not the synthetic images calibration tuned on.
    synth_logits = synthetic_logits(model_dir, args.synthetic_images, args.seed + 1, cache_dir, args.backend)
    fewshot_labels = {labels[i] for i in few_ids}
    tuning = build_tuning_set(
        logits, [lab for _, lab in items], labels, edibility, fewshot_labels, synth_logits
    )
    kinds = np.array(tuning.kind)
    safety_figures, verdicts_of = {}, {}
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
        verdicts_of[name] = {key: result.pop(key) for key in ("verdicts", "abstentions")}
        safety_figures[name] = result
    parity = backend_parity(model_dir, items, logits, verdicts_of["photos"], labels, edibility, safety, args,
                            cache_dir)
    danger = danger_by_group(verdicts_of["all"]["verdicts"], tuning.species_truth, tuning.group)

    metrics = {
        "model": str(model_dir),
        "version": safety.version,
        "split": args.split,
        "held_out": held_out,
        "n": len(items),
        # Which photos these figures are of (vision_model.release_rule compares models only on the same ones).
        "photo_set": dataset_version(zip(hashes, (lab for _, lab in items), strict=True)),
        "main": group_metrics(probs, targets, is_main, main_ids),
        "fewshot": group_metrics(probs, targets, ~is_main, few_ids),
        "overall_top1": mean_or_none(probs.argmax(1) == targets),
        "calibration": {
            "temperature": safety.temperature,
            "ece_before": expected_calibration_error(probs_raw, targets),
            "ece_after": expected_calibration_error(probs, targets),
            "nll_before": nll(logits, targets),
            "nll_after": nll(logits, targets, safety.temperature),
        },
        "safety": safety_figures,
        "danger": danger,
        "parity": parity,
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
                    counts[labels[cid]],
                    int(t.sum()),
                    f"{rec:.3f}",
                    f"{prec:.3f}",
                    f"{rec:.3f}",
                    f"{f1:.3f}",
                ]
            )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # What `monitor` compares served predictions with: each held-out photo's top-1 probability and verdict.
    (out / "reference.json").write_text(json.dumps({
        "model_version": safety.version, "top1_probability": [round(float(x), 6) for x in probs.max(1)],
        "verdicts": verdicts_of["photos"]["verdicts"], "abstention_rate": safety_figures["photos"]["abstention_rate"],
        "embeddings": np.round(output_embedding(logits), 4).tolist()}))
    tracking.record(
        "evaluate", args, {k: metrics[k] for k in ("n", "main", "fewshot", "overall_top1", "calibration", "safety",
                                                   "danger", "risk_coverage")},
        [out / name for name in ("metrics.json", "per_class.csv", "reference.json", "confusion_main.png",
                                 "reliability.png", "risk_coverage.png")],
        {"model_version": str(safety.version), "photo_set": metrics["photo_set"], "held_out": str(held_out)},
    )
    # Printed (not logged): this summary is the command's output.
    print(
        f"{args.split}: main top-1 {metrics['main']['top1'] or 0:.3f} top-3 {metrics['main']['top3'] or 0:.3f} | "
        f"few-shot top-1 {metrics['fewshot']['top1'] or 0:.3f} | dangerous errors "
        f"{safety_figures['all']['dangerous_errors']} | cost {safety_figures['all']['poison_cost']:.4f} | "
        f"abstain {safety_figures['all']['abstention_rate']:.3f} | danger recall / false alarms: "
        + ", ".join(f"{group} {pct(d['danger_recall'])} / {pct(d['false_alarm_rate'])}" for group, d in danger.items())
        + (f" | {parity['backend']} parity {parity['same']}/{parity['n']}" if parity else "")
        + f" -> {out}"
        + ("" if held_out else f" (NOT held out: the model was trained on these {args.split} photos)")
    )
    return metrics


if __name__ == "__main__":
    sys.exit(cli.run("evaluate", main=main))
