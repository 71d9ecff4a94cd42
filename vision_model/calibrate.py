"""Temperature scaling and safety-threshold tuning on validation photos -> safety.json.

`python -m vision_model calibrate --model DIR` (cheap: the validation logits are cached, so it
can be re-run whenever the species catalog changes - edibility is read from the catalog at
tuning time, never from CLASSES.csv).

1. Temperature T minimising the validation NLL (ECE reported before and after).
2. Open-set simulation, because the real held-out set has species outside the label set:
   - "leave-own-class-out": every validation photo of a few-shot species is scored again with
     its own class removed from the softmax - exactly what a photo of an unseen species looks
     like to the model (its mass lands on the nearest known species); its truth is "unknown";
   - synthetic non-mushroom images (noise, flat colours, gradients, stripes, bark/sky-like
     textures), truth "unknown".
3. Grid search over (danger_threshold, abstain_min_probability, edible_min_probability,
   ood_threshold) minimising the poison cost (100 x dangerous errors + 1 x edible photos not
   called edible) / N, subject to ZERO dangerous errors on the validation + open-set examples,
   and also zero when the model is assumed sharper than calibrated (probabilities at T / 1.5):
   a safety margin for species and photos we never saw. The chosen configuration is then
   re-checked photo by photo with verdict.decide (the production rule).
4. Never-edible fallback, when no grid setting reaches zero dangerous errors: `allow_edible`
   is switched off (decide() then never says "edible" or "edible_with_caution"), and the
   abstention thresholds are chosen to mean something to a user instead:
   - abstain_min_probability = the smallest calibrated top-1 probability p such that, among
     the validation photos whose top-1 probability is >= p, the top-1 species is right for at
     least SELECTIVE_ACCURACY_TARGET (90 %) of them ("selective accuracy"); 0.9 if no p does;
   - ood_threshold = the energy that flags OOD_VAL_FLAG_RATE (10 %) of the in-distribution
     validation photos, kept only if it flags a useful share of the simulated open set
     (>= OOD_MIN_OPEN_SET_SHARE and >= twice the validation rate), else None.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vision_model.verdict import SAFETY_FILE, SafetyConfig, decide, energy_score, softmax

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "images"
POISON_COST = 100.0  # a poisonous-or-avoid photo (or an unknown species) called "edible"
MISSED_EDIBLE_COST = 1.0  # an edible photo not called "edible"
# Never-edible fallback (see the module docstring, step 4).
SELECTIVE_ACCURACY_TARGET = 0.90  # accuracy wanted among the photos the model does not abstain on
DEFAULT_NEVER_EDIBLE_ABSTAIN = 0.9  # when no top-1 threshold reaches that accuracy
OOD_VAL_FLAG_RATE = 0.10  # share of in-distribution validation photos the OOD threshold may flag
OOD_MIN_OPEN_SET_SHARE = 0.25  # below this share of the open set flagged, the OOD check is dropped
SHARPEN_MARGIN = 1.5  # safety margin: no dangerous error even with probabilities at T / 1.5

# Each edibility class counts as "dangerous if called edible" unless it is plain edible.
SAFE_TO_CALL_EDIBLE = frozenset({"edible"})


@dataclass
class CalibrateArguments:
    model: str = field(
        default=str(PROJECT_ROOT / "vision_model" / "release"), metadata={"help": "model directory"}
    )
    data_dir: str = field(
        default=str(DEFAULT_DATA), metadata={"help": "image folder the model was trained on"}
    )
    splits: str | None = field(
        default=None,
        metadata={"help": "splits.json from the training run (default: recomputed from the seed)"},
    )
    seed: int = field(default=0, metadata={"help": "split seed (when splits.json is not given)"})
    min_photos: int = 2
    synthetic_images: int = field(default=64, metadata={"help": "synthetic non-mushroom images for open set"})
    version: str | None = field(
        default=None, metadata={"help": "version string for safety.json (default: kept, else train_info.json's)"}
    )
    backend: str = field(default="torch", metadata={"help": "inference backend for the logits"})
    cache_dir: str = field(default=str(PROJECT_ROOT / "var" / "cache" / "vision-logits"))
    from_model: str | None = field(
        default=None,
        metadata={
            "help": "copy the temperature and thresholds of this model directory instead of fitting "
            "them: for a model refit on train + validation photos (`train --refit`), whose twin "
            "run with the same recipe was calibrated on the validation photos it did not see"
        },
    )


# --- metrics -------------------------------------------------------------------------------------


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))))


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == targets
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(conf[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """1-D minimisation of the NLL over log T (golden section on [0.05, 20])."""
    lo, hi = math.log(0.05), math.log(20.0)
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(logits, targets, math.exp(a)), nll(logits, targets, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(logits, targets, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(logits, targets, math.exp(b))
    return float(math.exp((lo + hi) / 2))


# --- synthetic out-of-set images -------------------------------------------------------------------


def synthetic_images(n: int, seed: int = 0, size: int = 256) -> list[Image.Image]:
    """Things that are not mushrooms: noise, flat colours, gradients, stripes, blurred textures."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        kind = i % 6
        if kind == 0:  # uniform noise
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 1:  # flat colour
            arr = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
        elif kind == 2:  # linear gradient between two colours
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, size)[:, None, None]
            arr = np.broadcast_to(a * (1 - t) + b * t, (size, size, 3)).astype(np.uint8)
        elif kind == 3:  # stripes / checks
            period = int(rng.integers(4, 40))
            x = (np.arange(size) // period) % 2
            grid = (
                (x[:, None] ^ x[None, :]) if rng.random() < 0.5 else np.broadcast_to(x[None, :], (size, size))
            )
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            arr = np.where(grid[..., None] == 1, a, b).astype(np.uint8)
        elif kind == 4:  # sky-like: blue-ish gradient with soft blotches
            base = np.array([90, 140, 210]) + rng.integers(-30, 30, 3)
            noise = np.asarray(
                Image.fromarray(rng.integers(0, 256, (size // 16, size // 16), dtype=np.uint8)).resize(
                    (size, size), Image.BICUBIC
                ),
                dtype=np.float64,
            )[..., None]
            arr = np.clip(base + (noise - 128) * 0.4, 0, 255).astype(np.uint8)
        else:  # bark-like: vertically stretched brown noise
            noise = rng.integers(0, 256, (size, size // 8), dtype=np.uint8)
            img = (
                Image.fromarray(noise)
                .resize((size, size), Image.BILINEAR)
                .filter(ImageFilter.GaussianBlur(1))
            )
            shade = np.asarray(img, dtype=np.float64)[..., None] / 255.0
            arr = (np.array([110, 80, 50]) * (0.5 + shade)).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(np.ascontiguousarray(arr), mode="RGB"))
    return images


# --- logits of the validation photos (cached) -----------------------------------------------------


def _fingerprint(model_dir: Path, items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        path = model_dir / name
        if path.exists():
            st = path.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update("\n".join(items).encode())
    return h.hexdigest()[:16]


def model_logits(
    model_dir: Path, images: Sequence, keys: Sequence[str], cache_dir: Path | None, backend: str = "torch"
) -> np.ndarray:
    """Logits exactly as the production Classifier computes them (cached by weights + keys)."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{_fingerprint(Path(model_dir), list(keys))}.npy"
        if cache_path.exists():
            return np.load(cache_path)
    from tqdm.auto import tqdm

    from vision_model.classifier import Classifier

    clf = Classifier.load(model_dir, backend=backend, edibility=lambda label: "unknown")
    chunks = []
    step = 32
    for start in tqdm(range(0, len(images), step), desc="logits", unit="batch", leave=False):
        chunks.append(clf.logits(list(images[start : start + step])))
    logits = np.concatenate(chunks) if chunks else np.zeros((0, len(clf.labels)), dtype=np.float32)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, logits)
    return logits


def load_split(
    args_data_dir: str, splits_path: str | None, seed: int, min_photos: int, split: str
) -> list[tuple[Path, str]]:
    """(path, label) of one split: from a training run's splits.json, else recomputed from the seed."""
    root = Path(args_data_dir)
    if splits_path and Path(splits_path).exists():
        data = json.loads(Path(splits_path).read_text())
        return [(root / rel, label) for rel, label in data[split]]
    from vision_model.data import scan_image_folder, split_samples

    folder = scan_image_folder(root, min_photos=min_photos, verify=False)
    splits = split_samples(folder.samples, seed=seed).as_dict()
    return [(s.path, s.label) for s in splits[split]]


# --- threshold tuning --------------------------------------------------------------------------------


@dataclass
class TuningSet:
    """Examples for threshold tuning: logits over `labels` (masked classes = -inf) and true edibility."""

    logits: np.ndarray  # (N, C)
    truth: list[str]  # edibility class of the true species ("unknown" for open-set examples)
    kind: list[str]  # "val", "open_set_species", "synthetic"
    target: np.ndarray | None = None  # index of the true label (-1 for open-set examples)


def build_tuning_set(
    val_logits: np.ndarray,
    val_labels: Sequence[str],
    labels: Sequence[str],
    edibility: Callable[[str], str],
    fewshot: set[str],
    synthetic_logits: np.ndarray,
) -> TuningSet:
    index = {label: i for i, label in enumerate(labels)}
    rows, truth, kind = [val_logits], [edibility(lab) for lab in val_labels], ["val"] * len(val_labels)
    target = [index[lab] for lab in val_labels]
    masked = []
    for logit, lab in zip(val_logits, val_labels, strict=True):
        if lab in fewshot:
            row = logit.astype(np.float64).copy()
            row[index[lab]] = -np.inf  # the species is "not in the label set"
            masked.append(row)
    if masked:
        rows.append(np.stack(masked))
        truth += ["unknown"] * len(masked)
        kind += ["open_set_species"] * len(masked)
    if len(synthetic_logits):
        rows.append(synthetic_logits)
        truth += ["unknown"] * len(synthetic_logits)
        kind += ["synthetic"] * len(synthetic_logits)
    target += [-1] * (len(truth) - len(target))
    return TuningSet(
        np.concatenate([r.astype(np.float64) for r in rows]), truth, kind, np.array(target, dtype=int)
    )


def _masked_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - np.nanmax(np.where(np.isfinite(z), z, np.nan), axis=1, keepdims=True)
    e = np.where(np.isfinite(z), np.exp(np.where(np.isfinite(z), z, 0.0)), 0.0)
    return e / e.sum(1, keepdims=True)


def _masked_energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    finite = np.where(np.isfinite(logits), logits, -1e30)
    return energy_score(finite, temperature)


@dataclass
class Summaries:
    """Per-example quantities decide() depends on, for a vectorised grid search."""

    deadly: np.ndarray
    toxic: np.ndarray
    danger: np.ndarray
    top_prob: np.ndarray
    top_class: np.ndarray  # edibility class of the top-1 label
    edible_mass: np.ndarray
    other_mass: np.ndarray  # inedible + edible_with_caution
    energy: np.ndarray


def summarise(probs: np.ndarray, energy: np.ndarray, label_classes: np.ndarray) -> Summaries:
    def mass(*classes):
        return probs[:, np.isin(label_classes, classes)].sum(1)

    top = probs.argmax(1)
    return Summaries(
        mass("deadly"),
        mass("deadly", "poisonous"),
        mass("deadly", "poisonous", "unknown"),
        probs.max(1),
        label_classes[top],
        mass("edible"),
        mass("inedible", "edible_with_caution"),
        energy,
    )


def called_edible(
    s: Summaries, danger_t: float, abstain_t: float, edible_t: float, ood_t: float | None
) -> np.ndarray:
    """Vectorised copy of decide()'s path to "edible" (checked against decide() afterwards)."""
    ok = (
        (s.danger < danger_t)
        & (s.top_prob >= abstain_t)
        & (s.top_class == "edible")
        & (s.edible_mass >= edible_t)
    )
    if ood_t is not None:
        ok &= ~(s.energy > ood_t)
    return ok


def selective_accuracy_threshold(
    top_prob: np.ndarray, correct: np.ndarray, target: float = SELECTIVE_ACCURACY_TARGET
) -> float | None:
    """Smallest p such that accuracy among the examples with top-1 probability >= p is >= target.

    None when no p reaches the target (or there are no examples).
    """
    top_prob, correct = np.asarray(top_prob, dtype=np.float64), np.asarray(correct, dtype=bool)
    if len(top_prob) == 0:
        return None
    order = np.argsort(-top_prob, kind="stable")
    p_sorted, hits = top_prob[order], np.cumsum(correct[order])
    # Accuracy of "keep everything with top-1 >= p_sorted[i]": ties must be kept together,
    # so only the last index of each run of equal probabilities is a valid cut.
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    accuracy = hits / np.arange(1, len(p_sorted) + 1)
    ok = last_of_tie & (accuracy >= target)
    if not ok.any():
        return None
    return float(p_sorted[np.flatnonzero(ok)[-1]])


def selective_figures(top_prob: np.ndarray, correct: np.ndarray, threshold: float) -> dict:
    """Coverage and accuracy of the photos kept (top-1 probability >= threshold)."""
    kept = np.asarray(top_prob) >= threshold
    return {
        "coverage": float(kept.mean()) if len(kept) else 0.0,
        "selective_accuracy": float(np.asarray(correct)[kept].mean()) if kept.any() else None,
    }


def hardest_case(
    tuning: TuningSet, summaries: Summaries, is_edible: np.ndarray, labels: Sequence[str]
) -> dict | None:
    """The not-edible example that looks most confidently edible: why no edible threshold is safe.

    Among examples whose true species is not plain edible (or unknown) but whose top-1 is an
    edible species, the one with the most edible mass; the model card quotes it.
    """
    looks_edible = (summaries.top_class == "edible") & ~is_edible
    if not looks_edible.any():
        return None
    i = int(np.flatnonzero(looks_edible)[np.argmax(summaries.edible_mass[looks_edible])])
    target = -1 if tuning.target is None else int(tuning.target[i])
    return {
        "kind": tuning.kind[i],
        "true_label": labels[target] if target >= 0 else None,
        "true_edibility": tuning.truth[i],
        "predicted": labels[int(np.argmax(tuning.logits[i]))],  # masked classes are -inf
        "probability": float(summaries.top_prob[i]),
        "edible_mass": float(summaries.edible_mass[i]),
    }


def never_edible_thresholds(
    tuning: TuningSet, summaries: Summaries, is_edible: np.ndarray, labels: Sequence[str]
) -> dict:
    """The fallback configuration: no edible verdicts, abstention tuned for selective accuracy."""
    kinds = np.array(tuning.kind)
    val = kinds == "val"
    if tuning.target is not None:
        correct = tuning.logits[val].argmax(1) == tuning.target[val]
    else:  # no true labels known: nothing to tune the abstention on
        correct = np.zeros(int(val.sum()), dtype=bool)
    val_top = summaries.top_prob[val]
    found = selective_accuracy_threshold(val_top, correct)
    abstain = found if found is not None else DEFAULT_NEVER_EDIBLE_ABSTAIN
    selective = selective_figures(val_top, correct, abstain)

    val_energy, open_energy = summaries.energy[val], summaries.energy[~val]
    ood = {"val_flag_rate_target": OOD_VAL_FLAG_RATE, "min_open_set_share": OOD_MIN_OPEN_SET_SHARE}
    ood_threshold = None
    if len(val_energy):
        candidate = float(np.percentile(val_energy, 100 * (1 - OOD_VAL_FLAG_RATE)))
        val_rate = float((val_energy > candidate).mean())
        open_rate = float((open_energy > candidate).mean()) if len(open_energy) else 0.0
        useful = open_rate >= OOD_MIN_OPEN_SET_SHARE and open_rate >= 2 * val_rate
        ood.update(
            candidate=candidate, val_flag_rate=val_rate, open_set_flag_rate=open_rate, used=useful
        )
        ood_threshold = candidate if useful else None
    missed = int(is_edible.sum())  # never called edible
    return {
        "danger_threshold": 0.05,
        "abstain_min_probability": abstain,
        "edible_min_probability": 1.0,  # unused when allow_edible is False
        "ood_threshold": ood_threshold,
        "allow_edible": False,
        "cost": MISSED_EDIBLE_COST * missed / max(1, len(is_edible)),
        "dangerous": 0,
        "dangerous_sharpened": 0,
        "missed_edible": missed,
        "never_edible": True,
        "hardest_case": hardest_case(tuning, summaries, is_edible, labels),
        "selective": {
            "target_accuracy": SELECTIVE_ACCURACY_TARGET,
            "threshold_found": found is not None,
            "val_coverage": selective["coverage"],
            "val_selective_accuracy": selective["selective_accuracy"],
            "val_top1_all": float(correct.mean()) if len(correct) else None,
        },
        "ood": ood,
    }


def tune_thresholds(
    tuning: TuningSet,
    labels: Sequence[str],
    edibility: Callable[[str], str],
    temperature: float,
    val_energy_percentiles: dict[str, float],
) -> dict:
    label_classes = np.array([edibility(lab) or "unknown" for lab in labels])
    truth = np.array(tuning.truth)
    is_edible = np.isin(truth, list(SAFE_TO_CALL_EDIBLE))
    summaries = {
        "calibrated": summarise(
            _masked_softmax(tuning.logits, temperature),
            _masked_energy(tuning.logits, temperature),
            label_classes,
        ),
        "sharpened": summarise(
            _masked_softmax(tuning.logits, temperature / SHARPEN_MARGIN),
            _masked_energy(tuning.logits, temperature),
            label_classes,
        ),
    }
    grid = {
        "danger_threshold": [0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15],
        "abstain_min_probability": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
        "edible_min_probability": [0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999],
        "ood_threshold": [None, *val_energy_percentiles.values()],
    }
    best = None
    n = len(truth)
    for d, a, e, o in itertools.product(*grid.values()):
        edible_cal = called_edible(summaries["calibrated"], d, a, e, o)
        edible_sharp = called_edible(summaries["sharpened"], d, a, e, o)
        dangerous = int((edible_cal & ~is_edible).sum())
        dangerous_sharp = int((edible_sharp & ~is_edible).sum())
        missed = int((~edible_cal & is_edible).sum())
        cost = (POISON_COST * dangerous + MISSED_EDIBLE_COST * missed) / max(1, n)
        # Zero dangerous errors, with margin; then lowest cost; ties -> the more cautious setting.
        key = (dangerous + dangerous_sharp > 0, cost, d, -a, -e)
        if best is None or key < best[0]:
            best = (
                key,
                {
                    "danger_threshold": d,
                    "abstain_min_probability": a,
                    "edible_min_probability": e,
                    "ood_threshold": o,
                    "cost": cost,
                    "dangerous": dangerous,
                    "dangerous_sharpened": dangerous_sharp,
                    "missed_edible": missed,
                },
            )
    if best[0][0]:
        # No setting avoids every dangerous error: never say "edible" (nor "edible_with_caution").
        # Photos with real dangerous mass still get "deadly"/"poisonous"; a confident
        # edible-looking top-1 gets "unknown" (treat as poisonous), a confident inedible one
        # "inedible"; only unsure or unfamiliar photos abstain.
        log.warning("no threshold setting reaches zero dangerous errors: the model will never say 'edible'")
        return never_edible_thresholds(tuning, summaries["calibrated"], is_edible, labels)
    return {**best[1], "allow_edible": True}


def evaluate_with_decide(
    logits: np.ndarray,
    truth: Sequence[str],
    labels: Sequence[str],
    edibility: Callable[[str], str],
    safety: SafetyConfig,
) -> dict:
    """Poison cost and counts, photo by photo, with the production rule."""
    probs = _masked_softmax(np.asarray(logits, dtype=np.float64), safety.temperature)
    energy = _masked_energy(np.asarray(logits, dtype=np.float64), safety.temperature)
    verdicts, dangerous, dangerous_incl_caution, missed, abstained = [], 0, 0, 0, 0
    for p, en, t in zip(probs, energy, truth, strict=True):
        r = decide(p, labels, edibility, safety, energy=float(en))
        verdicts.append(r.verdict)
        abstained += r.abstained
        if r.verdict == "edible" and t not in SAFE_TO_CALL_EDIBLE:
            dangerous += 1
        # The stricter count a release check may use: "edible_with_caution" read as "edible".
        if r.verdict in ("edible", "edible_with_caution") and t not in SAFE_TO_CALL_EDIBLE:
            dangerous_incl_caution += 1
        if t in SAFE_TO_CALL_EDIBLE and r.verdict != "edible":
            missed += 1
    n = max(1, len(truth))
    return {
        "n": len(truth),
        "dangerous_errors": dangerous,
        "dangerous_errors_incl_caution": dangerous_incl_caution,
        "edible_verdicts": verdicts.count("edible"),
        "edible_with_caution_verdicts": verdicts.count("edible_with_caution"),
        "missed_edible": missed,
        "poison_cost": (POISON_COST * dangerous + MISSED_EDIBLE_COST * missed) / n,
        "abstention_rate": abstained / n,
        "verdicts": verdicts,
    }


GRID_RULE = "min (100*dangerous + missed_edible)/N s.t. zero dangerous errors at T and at T/1.5"
NEVER_EDIBLE_RULE = (
    "never-edible fallback (no grid setting had zero dangerous errors at T and at T/1.5): "
    "allow_edible=false; abstain below the smallest top-1 p whose validation selective accuracy "
    "(photos with top-1 >= p) is >= 0.90, else 0.9; ood_threshold = energy flagging 10% of "
    "validation photos, kept only if it flags >= 25% and >= 2x that share of the open set"
)


# --- entry point ---------------------------------------------------------------------------------------


def catalog_edibility() -> Callable[[str], str]:
    from knowledge_base.catalog import default_catalog

    catalog = default_catalog()
    return lambda label: catalog.edibility(label) or "unknown"


def transfer(model_dir: Path, twin_dir: Path, version: str | None) -> SafetyConfig:
    """The twin's calibration, for a model of the same recipe and labels that saw its val photos.

    Fitting on those photos would make the model look certain (they are training photos now);
    the twin measured how this recipe behaves on photos it has not seen, which is what the
    refit model will meet. `evaluate` on the test split checks that the transfer holds (ECE).
    """
    from vision_model.release import read_labels, read_preprocessor_config, read_train_info

    if read_labels(model_dir) != read_labels(twin_dir):
        raise ValueError(f"{twin_dir} has a different label set: its calibration does not apply")
    if read_preprocessor_config(model_dir) != read_preprocessor_config(twin_dir):
        raise ValueError(f"{twin_dir} sees another input size or preprocessing: its calibration does not apply")
    if not (twin_dir / SAFETY_FILE).exists():
        raise ValueError(f"{twin_dir} has no {SAFETY_FILE}: calibrate it first")
    twin = SafetyConfig.load(twin_dir)
    version = version or read_train_info(model_dir).get("version")
    safety = dataclasses.replace(
        twin,
        version=version or SafetyConfig.load(model_dir).version,
        extra={**twin.extra, "transferred_from": {"model": str(twin_dir), "version": twin.version}},
    )
    safety.save(model_dir)
    print(f"wrote {model_dir / 'safety.json'}: calibration of {twin.version} ({twin_dir})")
    return safety


def main(args: CalibrateArguments) -> SafetyConfig:
    from vision_model.release import read_labels, read_train_info, trained_splits

    model_dir = Path(args.model)
    if args.from_model:
        return transfer(model_dir, Path(args.from_model), args.version)
    if "val" in trained_splits(read_train_info(model_dir)):
        raise ValueError(
            f"{model_dir} was trained on its validation photos (--refit): calibrate its twin and "
            "pass --from_model TWIN_DIR"
        )
    labels = read_labels(model_dir)
    val = load_split(args.data_dir, args.splits, args.seed, args.min_photos, "val")
    train = load_split(args.data_dir, args.splits, args.seed, args.min_photos, "train")
    val = [(p, lab) for p, lab in val if lab in labels]
    counts: dict[str, int] = {}
    for _, lab in train + val + load_split(args.data_dir, args.splits, args.seed, args.min_photos, "test"):
        counts[lab] = counts.get(lab, 0) + 1
    from vision_model.train import MAIN_CLASS_MIN_PHOTOS

    fewshot = {lab for lab, c in counts.items() if c < MAIN_CLASS_MIN_PHOTOS}
    index = {label: i for i, label in enumerate(labels)}
    cache_dir = Path(args.cache_dir) if args.cache_dir else None

    val_logits = model_logits(
        model_dir, [p for p, _ in val], [str(p) for p, _ in val], cache_dir, args.backend
    ).astype(np.float64)
    synth = synthetic_images(args.synthetic_images, seed=args.seed)
    synth_logits = model_logits(
        model_dir, synth, [f"synthetic:{args.seed}:{i}" for i in range(len(synth))], cache_dir, args.backend
    ).astype(np.float64)
    targets = np.array([index[lab] for _, lab in val])

    temperature = fit_temperature(val_logits, targets)
    report = {
        "n_val": len(val),
        "nll_before": nll(val_logits, targets),
        "nll_after": nll(val_logits, targets, temperature),
        "ece_before": expected_calibration_error(softmax(val_logits), targets),
        "ece_after": expected_calibration_error(softmax(val_logits, temperature), targets),
        "temperature": temperature,
    }
    log.info(
        "temperature %.3f: NLL %.3f -> %.3f, ECE %.3f -> %.3f",
        temperature,
        report["nll_before"],
        report["nll_after"],
        report["ece_before"],
        report["ece_after"],
    )

    edibility = catalog_edibility()
    tuning = build_tuning_set(val_logits, [lab for _, lab in val], labels, edibility, fewshot, synth_logits)
    val_energy = energy_score(val_logits, temperature)
    percentiles = {f"p{q}": float(np.percentile(val_energy, q)) for q in (90, 95, 97.5, 99)}
    chosen = tune_thresholds(tuning, labels, edibility, temperature, percentiles)
    old = SafetyConfig.load(model_dir)
    if (model_dir / SAFETY_FILE).exists():
        version = args.version or old.version
    else:  # a first calibration (e.g. of a soup) names the model as train_info.json does
        version = args.version or read_train_info(model_dir).get("version") or old.version
    safety = SafetyConfig(
        version=version,
        temperature=temperature,
        abstain_min_probability=chosen["abstain_min_probability"],
        danger_threshold=chosen["danger_threshold"],
        edible_min_probability=chosen["edible_min_probability"],
        ood_threshold=chosen["ood_threshold"],
        allow_edible=chosen["allow_edible"],
    )
    checked = evaluate_with_decide(tuning.logits, tuning.truth, labels, edibility, safety)
    grid_dangerous = chosen["dangerous"]
    if checked["dangerous_errors"] != grid_dangerous:
        raise RuntimeError(
            f"threshold search disagrees with verdict.decide ({grid_dangerous} vs "
            f"{checked['dangerous_errors']} dangerous errors): fix calibrate.called_edible"
        )
    if not safety.allow_edible and checked["dangerous_errors_incl_caution"]:
        raise RuntimeError("never-edible configuration still gives edible(-with-caution) verdicts")
    catalogued = sum(edibility(lab) != "unknown" for lab in labels)
    kinds = np.array(tuning.kind)
    safety.extra = {
        "calibration": report,
        "tuning": {
            **{k: v for k, v in checked.items() if k != "verdicts"},
            "dangerous_errors_at_T_over_1.5": chosen["dangerous_sharpened"],
            "never_edible_fallback": bool(chosen.get("never_edible", False)),
            "examples": {k: int((kinds == k).sum()) for k in ("val", "open_set_species", "synthetic")},
            "labels_in_catalog": f"{catalogued}/{len(labels)}",
            "ood_percentiles": percentiles,
            "rule": NEVER_EDIBLE_RULE if chosen.get("never_edible") else GRID_RULE,
            **{k: chosen[k] for k in ("selective", "ood", "hardest_case") if k in chosen},
        },
    }
    safety.save(model_dir)
    # Printed (not logged): this summary is the command's output.
    summary = {k: v for k, v in safety.to_dict().items() if k not in ("calibration", "tuning")}
    print(f"wrote {model_dir / 'safety.json'}: {json.dumps(summary)}")
    print(f"calibration: {json.dumps(report)}")
    print(f"tuning: {json.dumps(safety.extra['tuning'])}")
    return safety


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from vision_model.train import add_dataclass_arguments

    parser = parser or argparse.ArgumentParser(prog="python -m vision_model calibrate")
    return add_dataclass_arguments(parser, CalibrateArguments)


if __name__ == "__main__":
    from vision_model.train import dataclass_from_namespace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(dataclass_from_namespace(CalibrateArguments, build_parser().parse_args()))
