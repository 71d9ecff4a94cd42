"""What training, calibration and evaluation measure: accuracy, likelihood, calibration, safety costs.

Plain numpy on logits or probabilities (no torch), one definition each:
- `split_accuracy` / `selection_score`: the training loop's per-epoch validation figures and the
  score it selects epochs by (main-class top-1 first, few-shot top-1 to break near-ties);
- `nll`, `expected_calibration_error` (15 equal-width confidence bins, `reliability_bins`),
  `topk_hits`, `group_metrics`, `risk_coverage`;
- the FungiCLEF-style poison cost of the production rule (`evaluate_with_decide`): a photo of a species
  that is not plain edible (or of an unknown species) called "edible" costs POISON_COST, an edible
  photo not called edible MISSED_EDIBLE_COST, per photo.
Logits may hold -inf for classes masked out (a species "outside the label set", simulated):
`masked_softmax` / `masked_energy` give them zero probability.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from vision_model.verdict import SafetyConfig, decide, energy_score, softmax

POISON_COST = 100.0  # a poisonous-or-avoid photo (or an unknown species) called "edible"
MISSED_EDIBLE_COST = 1.0  # an edible photo not called "edible"
# Each edibility class counts as "dangerous if called edible" unless it is plain edible.
SAFE_TO_CALL_EDIBLE = frozenset({"edible"})
# Issue 23's two figures: a warning must catch the dangerous mushrooms and mean something on the others.
DANGEROUS_TRUTH = frozenset({"deadly", "poisonous"})
WARNING_VERDICTS = frozenset({"deadly", "poisonous"})
EDIBLE_TRUTH = frozenset({"edible", "edible_with_caution"})
CALIBRATION_BINS = 15


def poison_cost(dangerous: int, missed_edible: int, n: int) -> float:
    """(100 x dangerous errors + 1 x edible photos not called edible) / N."""
    return (POISON_COST * dangerous + MISSED_EDIBLE_COST * missed_edible) / max(1, n)


def masked_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - np.nanmax(np.where(np.isfinite(z), z, np.nan), axis=1, keepdims=True)
    e = np.where(np.isfinite(z), np.exp(np.where(np.isfinite(z), z, 0.0)), 0.0)
    return e / e.sum(1, keepdims=True)


def masked_energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    finite = np.where(np.isfinite(logits), logits, -1e30)
    return energy_score(finite, temperature)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the targets under softmax(logits / temperature)."""
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))))


def reliability_bins(
    probs: np.ndarray, targets: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, float]]:
    """(share of examples, mean confidence, accuracy) of each non-empty confidence bin."""
    conf = probs.max(1)
    correct = probs.argmax(1) == targets
    rows = []
    for lo, hi in itertools.pairwise(np.linspace(0, 1, bins + 1)):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            rows.append((float(in_bin.mean()), float(conf[in_bin].mean()), float(correct[in_bin].mean())))
    return rows


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    return float(sum(share * abs(conf - acc) for share, conf, acc in reliability_bins(probs, targets, bins)))


def topk_hits(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per example: is the target among the k highest scores?"""
    k = min(k, scores.shape[1])
    return (np.argsort(-scores, axis=1)[:, :k] == targets[:, None]).any(1)


def split_accuracy(logits: np.ndarray, targets: np.ndarray, main_mask: np.ndarray) -> dict[str, float]:
    """The training loop's validation figures (NaN for an empty group)."""
    correct = logits.argmax(1) == targets
    top3 = topk_hits(logits, targets, 3)

    def mean(x):
        return float(x.mean()) if len(x) else float("nan")

    return {
        "top1": mean(correct),
        "top1_main": mean(correct[main_mask]),
        "top3_main": mean(top3[main_mask]),
        "top1_fewshot": mean(correct[~main_mask]),
        "nll": nll(logits, targets) if len(targets) else float("nan"),
    }


def selection_score(m: dict[str, float]) -> float:
    """Model selection: the main-class top-1 is the product's number; few-shot breaks near-ties."""

    def value(x: float) -> float:
        return 0.0 if math.isnan(x) else x

    return 0.8 * value(m["top1_main"]) + 0.2 * value(m["top1_fewshot"])


def mean_or_none(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def group_metrics(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, class_ids: list[int]) -> dict:
    """Top-1, top-3 and macro-F1 of one group of classes (None where the group is empty)."""
    from sklearn.metrics import f1_score

    pred = probs.argmax(1)
    return {
        "n": int(mask.sum()),
        "top1": mean_or_none((pred == targets)[mask]),
        "top3": mean_or_none(topk_hits(probs, targets, 3)[mask]),
        "macro_f1": float(f1_score(targets, pred, labels=class_ids, average="macro", zero_division=0))
        if class_ids
        else None,
    }


def risk_coverage(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Coverage and top-1 error among the answered photos, most confident first; and their AURC."""
    order = np.argsort(-probs.max(1))
    errors = (probs.argmax(1) != targets)[order]
    answered = np.arange(1, len(order) + 1)
    coverage = answered / max(1, len(order))
    risk = np.cumsum(errors) / answered
    return coverage, risk, float(risk.mean()) if len(risk) else None


def danger_figures(verdicts: Sequence[str], truth: Sequence[str]) -> dict:
    """Danger recall: the share of photos of deadly or poisonous species given a deadly/poisonous verdict
    (an "unknown" does not count: it is safe, but it names no danger). False-alarm rate: the share of photos
    of edible species given a deadly/poisonous verdict (an "unknown" is not an alarm)."""
    warned = [v in WARNING_VERDICTS for v, t in zip(verdicts, truth, strict=True) if t in DANGEROUS_TRUTH]
    alarms = [v in WARNING_VERDICTS for v, t in zip(verdicts, truth, strict=True) if t in EDIBLE_TRUTH]
    return {
        "dangerous_photos": len(warned),
        "danger_recall": mean_or_none(np.array(warned, dtype=bool)),
        "edible_photos": len(alarms),
        "false_alarm_rate": mean_or_none(np.array(alarms, dtype=bool)),
    }


DANGER_GROUPS = ("main", "rare", "open_set")


def danger_by_group(verdicts: Sequence[str], species_truth: Sequence[str], group: Sequence[str]) -> dict:
    """danger_figures per group of a tuning set (heldout.TuningSet's `group`): main-class photos, rare-species
    photos, and the open set (rare species' photos scored with their own class removed), each judged against
    what the photo really shows (`species_truth`: deadly, edible...), not against "unknown"."""
    return {
        name: danger_figures(
            [v for v, g in zip(verdicts, group, strict=True) if g == name],
            [t for t, g in zip(species_truth, group, strict=True) if g == name],
        )
        for name in DANGER_GROUPS
    }


def evaluate_with_decide(
    logits: np.ndarray,
    truth: Sequence[str],
    labels: Sequence[str],
    edibility: Callable[[str], str],
    safety: SafetyConfig,
) -> dict:
    """Poison cost and counts, photo by photo, with the production rule (verdict.decide)."""
    probs = masked_softmax(np.asarray(logits, dtype=np.float64), safety.temperature)
    energy = masked_energy(np.asarray(logits, dtype=np.float64), safety.temperature)
    verdicts, abstentions, dangerous, dangerous_incl_caution, missed = [], [], 0, 0, 0
    for p, en, t in zip(probs, energy, truth, strict=True):
        r = decide(p, labels, edibility, safety, energy=float(en))
        verdicts.append(r.verdict)
        abstentions.append(r.abstained)
        if r.verdict == "edible" and t not in SAFE_TO_CALL_EDIBLE:
            dangerous += 1
        # The stricter count a release check may use: "edible_with_caution" read as "edible".
        if r.verdict in ("edible", "edible_with_caution") and t not in SAFE_TO_CALL_EDIBLE:
            dangerous_incl_caution += 1
        if t in SAFE_TO_CALL_EDIBLE and r.verdict != "edible":
            missed += 1
    return {
        "n": len(truth),
        "dangerous_errors": dangerous,
        "dangerous_errors_incl_caution": dangerous_incl_caution,
        "edible_verdicts": verdicts.count("edible"),
        "edible_with_caution_verdicts": verdicts.count("edible_with_caution"),
        "missed_edible": missed,
        "poison_cost": poison_cost(dangerous, missed, len(truth)),
        "abstention_rate": sum(abstentions) / max(1, len(truth)),
        "verdicts": verdicts,
        "abstentions": abstentions,
    }


def shown_answers(probs: np.ndarray, verdicts: Sequence[str], abstentions: Sequence[bool],
                  labels: Sequence[str]) -> list[tuple[str, str | None]]:
    """Per photo, what its reply tells (knowledge_base.answer_types.shown_answer): the verdict shown and the
    species named as "most likely", if any. Two backends are at parity on a photo when these are equal: a
    near-tie among guesses the reply calls unreliable is not a different answer."""
    from knowledge_base.answer_types import shown_answer

    probs = np.asarray(probs)
    top, top_prob = probs.argmax(1), probs.max(1)
    return [shown_answer(v, bool(a), labels[int(t)], float(p))
            for v, a, t, p in zip(verdicts, abstentions, top, top_prob, strict=True)]
