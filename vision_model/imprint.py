"""`python -m vision_model imprint`: blend class prototypes into the head, for species with few photos.

A species with three training photos gets a weak head row: the few gradient steps it saw are
drowned by the thousands of the main classes. Its photos' features, though, are right there. The
nearest-prototype score (cosine of a photo's feature to the mean feature of a species' training
photos; "imprinted weights", Qi et al. 2018) needs no training and treats every species alike.

Both are linear in the head's input (the concatenated CLS token and mean patch token), because
the cosine is taken against the typical feature norm r (the median over training photos) instead
of each photo's own norm:

    logits = W f + b  +  alpha * (P / r) f        P: one unit-length prototype per class

so the blend is a new head, W + alpha P / r, and the model stays the same graph: the ONNX export,
int8, the Classifier and the release flow are untouched. Every class gets its prototype (a shift
common to all classes changes no softmax); the species with few photos gain most, because their
head rows are weakest.

alpha is chosen on the validation photos by a rule fixed before any run: the largest rare-species
top-1 among ALPHAS, provided the main-class top-1 is not lower than without prototypes; ties go to
the smaller alpha; 0 (no change) when nothing gains. A refit takes its twin's alpha (`--alpha`),
as it takes its calibration. The output has no safety.json: calibrate it afterwards.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_model import cli, tracking
from vision_model.data import MAIN_CLASS_MIN_PHOTOS, load_splits
from vision_model.dataset import MANIFEST_FILE
from vision_model.release import (
    DERIVED_COPIES,
    WEIGHT_FILES,
    read_labels,
    read_train_info,
    trained_splits,
    write_derived_model,
)

log = logging.getLogger(__name__)

ALPHAS = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)


@dataclass
class ImprintArguments:
    model: str = field(default="var/runs/vision/model", metadata={"help": "the model directory to blend into"})
    output_dir: str = field(default="var/runs/vision-imprint", metadata={"help": "where the blended model goes"})
    data_dir: list[str] = field(default_factory=list, metadata=cli.DATA_FIELD_METADATA)
    splits: str | None = field(default=None, metadata={"help": "splits.json of the model's training run"})
    seed: int = field(default=0, metadata={"help": "split seed (when splits.json is not given)"})
    min_photos: int = 2
    alpha: float | None = field(
        default=None, metadata={"help": "use this blend weight (a refit: its twin's); default: chosen on validation"}
    )
    batch_size: int = 16
    cache_dir: str = field(
        default_factory=lambda: cli.cache_dir("vision-features-head"),
        metadata={"help": "cache of the head-input features, keyed by the weights and photos"},
    )

    def __post_init__(self):
        self.data_dir = cli.data_folders(self.data_dir)


def head_inputs(model_dir: Path, paths: Sequence[Path], batch_size: int = 16, cache_dir: Path | None = None):
    """(features the classifier head sees, logits) of each photo, float32 torch eager, cached by weights + paths."""
    from vision_model.heldout import _fingerprint

    cache = Path(cache_dir) / f"{_fingerprint(model_dir, [str(p) for p in paths])}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        saved = np.load(cache)
        return saved["features"], saved["logits"]
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForImageClassification

    from vision_model.classifier import load_preprocessor
    from vision_model.images import decode_image

    model = AutoModelForImageClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    preprocess = load_preprocessor(model_dir)
    seen: list[np.ndarray] = []
    hook = model.classifier.register_forward_pre_hook(lambda _module, args: seen.append(args[0].numpy().copy()))
    logits = []
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(paths), batch_size), desc="head features", unit="batch"):
                images = [decode_image(p) for p in paths[start:start + batch_size]]
                logits.append(model(pixel_values=torch.from_numpy(preprocess(images))).logits.numpy())
    finally:
        hook.remove()
    features = np.concatenate(seen).astype(np.float32)
    logits = np.concatenate(logits).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=features, logits=logits)
    return features, logits


def prototypes(features: np.ndarray, targets: np.ndarray, n_classes: int) -> tuple[np.ndarray, float]:
    """Unit-length mean of each class's unit-length features (zero for a class without photos), and the
    median feature norm r that turns cosines into a linear term."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    protos = np.zeros((n_classes, features.shape[1]), dtype=np.float64)
    np.add.at(protos, targets, unit)
    protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
    return protos, float(np.median(norms))


def blended_logits(logits: np.ndarray, features: np.ndarray, protos: np.ndarray, r: float, alpha: float):
    return logits + alpha * (features @ (protos / r).T)


def choose_alpha(val_logits, val_features, val_targets, protos, r, is_main) -> tuple[float, list[dict]]:
    """The module docstring's rule, with every alpha's validation figures."""
    rows = []
    for alpha in ALPHAS:
        hit = blended_logits(val_logits, val_features, protos, r, alpha).argmax(1) == val_targets
        rows.append({"alpha": alpha, "main_top1": float(hit[is_main].mean()) if is_main.any() else None,
                     "rare_top1": float(hit[~is_main].mean()) if (~is_main).any() else None})
    base = rows[0]
    allowed = [row for row in rows if (row["main_top1"] or 0.0) >= (base["main_top1"] or 0.0)]
    best = max(allowed, key=lambda row: (row["rare_top1"] or 0.0, -row["alpha"]))
    return best["alpha"], rows


def write_model(src: Path, out: Path, weight_delta: np.ndarray, info_extra: dict) -> None:
    """src's model with `weight_delta` added to the head's weight, saved as src was (dtype kept)."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(src / WEIGHT_FILES[0]))
    weight = state["classifier.weight"]
    state["classifier.weight"] = (weight.float() + torch.from_numpy(weight_delta).float()).to(weight.dtype)
    # The photo manifest too: the blended model learnt from exactly src's photos.
    write_derived_model(out, state, src, {**read_train_info(src), **info_extra}, (*DERIVED_COPIES, MANIFEST_FILE))


def main(args: ImprintArguments) -> dict:
    src, out = Path(args.model), Path(args.output_dir)
    labels = read_labels(src)
    index = {label: i for i, label in enumerate(labels)}
    learnt = trained_splits(read_train_info(src))
    splits = load_splits(args.data_dir, args.splits, args.seed, args.min_photos)
    counts = Counter(lab for items in splits.values() for _, lab in items)
    # The prototypes come from the photos the model learnt from (a refit: train + val; a final fit: all).
    fit = [(p, lab) for name in ("train", "val", "test") if name in learnt for p, lab in splits.get(name, [])
           if lab in index]
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    fit_features, _ = head_inputs(src, [p for p, _ in fit], args.batch_size, cache_dir)
    protos, r = prototypes(fit_features, np.array([index[lab] for _, lab in fit]), len(labels))
    report: dict = {"fit_photos": len(fit), "feature_norm_median": r}
    if args.alpha is None:
        if "val" in learnt:
            raise ValueError(f"{src} learnt from its validation photos: give its twin's --alpha")
        val = [(p, lab) for p, lab in splits["val"] if lab in index]
        val_features, val_logits = head_inputs(src, [p for p, _ in val], args.batch_size, cache_dir)
        targets = np.array([index[lab] for _, lab in val])
        is_main = np.array([counts[lab] >= MAIN_CLASS_MIN_PHOTOS for _, lab in val])
        alpha, rows = choose_alpha(val_logits, val_features, targets, protos, r, is_main)
        report.update(val_photos=len(val), by_alpha=rows)
        for row in rows:
            log.info("alpha %5.1f: val main top-1 %.3f, rare top-1 %.3f", row["alpha"], row["main_top1"] or 0,
                     row["rare_top1"] or 0)
    else:
        alpha = float(args.alpha)
    report["alpha"] = alpha
    write_model(src, out, alpha * protos / r, {"imprint": {"from_model": str(src), **report}})
    print(f"wrote {out}: head + {alpha} x prototypes of {len(fit)} photos; calibrate it before use")
    print(json.dumps({k: v for k, v in report.items() if k != "by_alpha"}))
    tracking.record("imprint", args, {"alpha": alpha, "fit_photos": len(fit)}, [out / "train_info.json"])
    return report


if __name__ == "__main__":
    sys.exit(cli.run("imprint", main=main))
