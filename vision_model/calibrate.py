"""Temperature scaling and safety-threshold tuning on validation photos -> safety.json.

`python -m vision_model calibrate --model DIR` (cheap: the validation logits are cached, so it
can be re-run whenever the species catalog changes - edibility is read from the catalog at
tuning time, never from CLASSES.csv).

1. Temperature T minimising the validation NLL (ECE reported before and after).
2. Open-set simulation (vision_model.heldout), because the real held-out set has species
   outside the label set:
   - "leave-own-class-out": every validation photo of a few-shot species is scored again with
     its own class removed from the softmax - exactly what a photo of an unseen species looks
     like to the model (its mass lands on the nearest known species); its truth is "unknown";
   - synthetic non-mushroom images (noise, flat colours, gradients, stripes, bark/sky-like
     textures), truth "unknown".
3. Grid search over (danger_threshold, abstain_min_probability, edible_min_probability,
   ood_threshold) minimising the poison cost (vision_model.metrics: 100 x dangerous errors +
   1 x edible photos not called edible) / N, subject to ZERO dangerous errors on the validation + open-set examples,
   and also zero when the model is assumed sharper than calibrated (probabilities at T / 1.5):
   a safety margin for species and photos we never saw. The chosen configuration is then
   re-checked photo by photo with verdict.decide (the production rule).
4. Warning threshold (both branches below): the deadly/poisonous mass at which the verdict warns
   outright (verdict.py). The largest of WARNING_GRID whose danger recall - photos of deadly or
   poisonous species warned, "unknown" not counted - stays at least DANGER_RECALL_TARGETS on each
   group of the tuning set (main-class val photos 0.98, rare-species val photos 0.85, the open set
   0.85), or at what the danger threshold itself reaches where that is lower: the fewest false alarms
   on edible photos that keep the warnings catching the dangerous ones. Fixed before any run
   (issue 23); a photo below it but above the danger threshold gets "unknown" with its dangerous
   candidates named, never a reassuring verdict.
5. Never-edible fallback, when no grid setting reaches zero dangerous errors: `allow_edible`
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

import dataclasses
import itertools
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_model import cli, tracking
from vision_model.data import MAIN_CLASS_MIN_PHOTOS, load_splits
from vision_model.heldout import (
    HeldOutArguments,
    LearntPhotos,
    TuningSet,
    build_tuning_set,
    learnt_photos,
    photo_logits,
    synthetic_logits,
)
from vision_model.metrics import (
    DANGER_GROUPS,
    DANGEROUS_TRUTH,
    EDIBLE_TRUTH,
    SAFE_TO_CALL_EDIBLE,
    danger_by_group,
    evaluate_with_decide,
    expected_calibration_error,
    masked_energy,
    masked_softmax,
    mean_or_none,
    nll,
    poison_cost,
)
from vision_model.release import read_labels, read_train_info, trained_splits
from vision_model.verdict import SAFETY_FILE, SafetyConfig, energy_score, softmax

log = logging.getLogger(__name__)

# Never-edible fallback (see the module docstring, step 4).
SELECTIVE_ACCURACY_TARGET = 0.90  # accuracy wanted among the photos the model does not abstain on
DEFAULT_NEVER_EDIBLE_ABSTAIN = 0.9  # when no top-1 threshold reaches that accuracy
OOD_VAL_FLAG_RATE = 0.10  # share of in-distribution validation photos the OOD threshold may flag
OOD_MIN_OPEN_SET_SHARE = 0.25  # below this share of the open set flagged, the OOD check is dropped
SHARPEN_MARGIN = 1.5  # safety margin: no dangerous error even with probabilities at T / 1.5
# The safety.json fields a threshold search chooses (the temperature is fitted first).
THRESHOLDS = (
    "danger_threshold",
    "abstain_min_probability",
    "edible_min_probability",
    "ood_threshold",
    "allow_edible",
    "warning_threshold",
)
# Step 4: the warning thresholds tried, and the danger recall each group must keep (issue 23's targets).
WARNING_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
DANGER_RECALL_TARGETS = {"main": 0.98, "rare": 0.85, "open_set": 0.85}


@dataclass
class CalibrateArguments(HeldOutArguments):
    version: str | None = field(
        default=None, metadata={"help": "version string for safety.json (default: kept, else train_info.json's)"}
    )
    from_model: str | None = field(
        default=None,
        metadata={
            "help": "copy the temperature and thresholds of this model directory instead of fitting "
            "them: for a model refit on train + validation photos (`train --refit`), whose twin "
            "run with the same recipe was calibrated on the validation photos it did not see"
        },
    )


# --- temperature --------------------------------------------------------------------------------------


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


# --- threshold tuning --------------------------------------------------------------------------------


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
    target = int(tuning.target[i])
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
    correct = tuning.logits[val].argmax(1) == tuning.target[val]
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
        "cost": poison_cost(0, missed, len(is_edible)),
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
    label_classes = np.array([edibility(lab) for lab in labels])
    truth = np.array(tuning.truth)
    is_edible = np.isin(truth, list(SAFE_TO_CALL_EDIBLE))
    summaries = {
        "calibrated": summarise(
            masked_softmax(tuning.logits, temperature),
            masked_energy(tuning.logits, temperature),
            label_classes,
        ),
        "sharpened": summarise(
            masked_softmax(tuning.logits, temperature / SHARPEN_MARGIN),
            masked_energy(tuning.logits, temperature),
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
        cost = poison_cost(dangerous, missed, n)
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
        chosen = never_edible_thresholds(tuning, summaries["calibrated"], is_edible, labels)
    else:
        chosen = {**best[1], "allow_edible": True}
    return {**chosen, **tune_warning_threshold(tuning, summaries["calibrated"].toxic, chosen["danger_threshold"])}


def warning_figures(tuning: TuningSet, warned: np.ndarray) -> dict:
    """Danger recall and false-alarm rate per group when exactly the `warned` examples get a warning."""
    species, group = np.array(tuning.species_truth), np.array(tuning.group)
    dangerous, edible = np.isin(species, list(DANGEROUS_TRUTH)), np.isin(species, list(EDIBLE_TRUTH))
    figures = {}
    for name in DANGER_GROUPS:
        in_group = group == name
        figures[name] = {
            "danger_recall": mean_or_none(warned[in_group & dangerous]),
            "false_alarm_rate": mean_or_none(warned[in_group & edible]),
        }
    return figures


def tune_warning_threshold(tuning: TuningSet, toxic: np.ndarray, danger_threshold: float) -> dict:
    """Step 4 of the module docstring: the largest warning threshold that keeps danger recall.

    `toxic`: each example's calibrated deadly + poisonous mass (decide() warns when it is at least the
    warning threshold). Recall only falls as the threshold rises, so the largest threshold that keeps
    every group's recall is also the one with the fewest false alarms.
    """
    if not tuning.species_truth:  # a tuning set without species truth: keep the single threshold
        return {"warning_threshold": None}
    at_danger = warning_figures(tuning, toxic >= danger_threshold)
    needed = {
        name: min(target, at_danger[name]["danger_recall"])
        for name, target in DANGER_RECALL_TARGETS.items()
        if at_danger[name]["danger_recall"] is not None
    }
    chosen = danger_threshold
    for threshold in sorted(w for w in WARNING_GRID if w > danger_threshold):
        figures = warning_figures(tuning, toxic >= threshold)
        if all(figures[name]["danger_recall"] >= need - 1e-12 for name, need in needed.items()):
            chosen = threshold
    return {
        "warning_threshold": chosen,
        "warning": {
            "recall_needed": needed,
            "at_danger_threshold": at_danger,
            "at_warning_threshold": warning_figures(tuning, toxic >= chosen),
        },
    }


GRID_RULE = "min (100*dangerous + missed_edible)/N s.t. zero dangerous errors at T and at T/1.5"
NEVER_EDIBLE_RULE = (
    "never-edible fallback (no grid setting had zero dangerous errors at T and at T/1.5): "
    "allow_edible=false; abstain below the smallest top-1 p whose validation selective accuracy "
    "(photos with top-1 >= p) is >= 0.90, else 0.9; ood_threshold = energy flagging 10% of "
    "validation photos, kept only if it flags >= 25% and >= 2x that share of the open set"
)


# --- entry point ---------------------------------------------------------------------------------------


def transfer(model_dir: Path, twin_dir: Path, version: str | None) -> SafetyConfig:
    """The twin's calibration, for a model of the same recipe and labels that saw its val photos.

    Fitting on those photos would make the model look certain (they are training photos now);
    the twin measured how this recipe behaves on photos it has not seen, which is what the
    refit model will meet. `evaluate` on the test split checks that the transfer holds (ECE).
    """
    from vision_model.release import read_preprocessor_config

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


def safety_config(chosen: dict, temperature: float, version: str = SafetyConfig.version) -> SafetyConfig:
    """The SafetyConfig of a threshold choice (tune_thresholds) at a fitted temperature."""
    return SafetyConfig(version=version, temperature=temperature, **{k: chosen[k] for k in THRESHOLDS})


def main(args: CalibrateArguments) -> SafetyConfig:
    from vision_model.classifier import catalog_edibility

    model_dir = Path(args.model)
    if args.from_model:
        return transfer(model_dir, Path(args.from_model), args.version)
    if "val" in trained_splits(read_train_info(model_dir)):
        raise ValueError(
            f"{model_dir} was trained on its validation photos (--refit): calibrate its twin and "
            "pass --from_model TWIN_DIR"
        )
    labels = read_labels(model_dir)
    splits = load_splits(args.data_dir, args.splits, args.seed, args.min_photos)
    val = [(p, lab) for p, lab in splits["val"] if lab in labels]
    learnt = learnt_photos(model_dir, val)
    if learnt:
        raise LearntPhotos(
            f"{model_dir} learnt from {len(learnt)} of these {len(val)} validation photos (e.g. {learnt[0]}): "
            "calibrating on them would trust it too much; give the splits.json of its own training run"
        )
    counts = Counter(lab for items in splits.values() for _, lab in items)
    fewshot = {lab for lab, c in counts.items() if c < MAIN_CLASS_MIN_PHOTOS}
    index = {label: i for i, label in enumerate(labels)}
    cache_dir = Path(args.cache_dir) if args.cache_dir else None

    val_logits = photo_logits(model_dir, val, cache_dir, args.backend)
    synth_logits = synthetic_logits(model_dir, args.synthetic_images, args.seed, cache_dir, args.backend)
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
    safety = safety_config(chosen, temperature, version)
    checked = evaluate_with_decide(tuning.logits, tuning.truth, labels, edibility, safety)
    grid_dangerous = chosen["dangerous"]
    if checked["dangerous_errors"] != grid_dangerous:
        raise RuntimeError(
            f"threshold search disagrees with verdict.decide ({grid_dangerous} vs "
            f"{checked['dangerous_errors']} dangerous errors): fix calibrate.called_edible"
        )
    if not safety.allow_edible and checked["dangerous_errors_incl_caution"]:
        raise RuntimeError("never-edible configuration still gives edible(-with-caution) verdicts")
    danger = danger_by_group(checked["verdicts"], tuning.species_truth, tuning.group)
    if "warning" in chosen and any(
        danger[g][k] != chosen["warning"]["at_warning_threshold"][g][k]
        for g in DANGER_GROUPS for k in ("danger_recall", "false_alarm_rate")
    ):
        raise RuntimeError("warning-threshold search disagrees with verdict.decide: fix calibrate.warning_figures")
    catalogued = sum(edibility(lab) != "unknown" for lab in labels)
    kinds = np.array(tuning.kind)
    safety.extra = {
        "calibration": report,
        "tuning": {
            **{k: v for k, v in checked.items() if k not in ("verdicts", "abstentions")},
            "dangerous_errors_at_T_over_1.5": chosen["dangerous_sharpened"],
            "never_edible_fallback": bool(chosen.get("never_edible", False)),
            "examples": {k: int((kinds == k).sum()) for k in ("val", "open_set_species", "synthetic")},
            "labels_in_catalog": f"{catalogued}/{len(labels)}",
            "ood_percentiles": percentiles,
            "rule": NEVER_EDIBLE_RULE if chosen.get("never_edible") else GRID_RULE,
            "danger": danger,
            **{k: chosen[k] for k in ("selective", "ood", "hardest_case", "warning") if k in chosen},
        },
    }
    safety.save(model_dir)
    # Printed (not logged): this summary is the command's output.
    summary = {k: v for k, v in safety.to_dict().items() if k not in ("calibration", "tuning")}
    print(f"wrote {model_dir / 'safety.json'}: {json.dumps(summary)}")
    print(f"calibration: {json.dumps(report)}")
    print(f"tuning: {json.dumps(safety.extra['tuning'])}")
    tracking.record("calibrate", args, {"temperature": safety.temperature, "calibration": report,
                                        "tuning": safety.extra["tuning"]},
                    [model_dir / SAFETY_FILE], {"model_version": str(safety.version)})
    return safety


if __name__ == "__main__":
    sys.exit(cli.run("calibrate", main=main))
