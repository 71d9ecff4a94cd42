"""The safety rule: calibrated class probabilities -> an edibility verdict.

One pure function, `decide`, used both by the Classifier at inference time and by the
training engineer's threshold tuning, so the thresholds tuned are exactly the rule served.

Rule (checked in this order; the first that fires wins):
1. P(deadly) >= warning_threshold                        -> "deadly"
2. P(deadly) + P(poisonous) >= warning_threshold         -> "poisonous" (even if top-1 is edible)
3. P(deadly) + P(poisonous) + P(label not in the catalog) >= danger_threshold
                                                         -> "unknown" (we cannot rule poison out)
4. top-1 probability < abstain_min_probability, or the photo looks out-of-distribution
   (energy score above ood_threshold)                    -> "unknown", abstained=True
5. otherwise the top-1 label's class; but "edible" only when the summed probability of all
   edible species >= edible_min_probability, else the more probable of inedible /
   edible_with_caution (by summed mass), else "unknown".
   With `allow_edible=False` (a model that must never say "edible", chosen by calibration when
   no threshold avoids every dangerous error) step 5 becomes: top-1 "inedible" -> "inedible";
   top-1 "edible" or "edible_with_caution" -> "unknown" (treat as poisonous: a photo cannot rule
   out the lookalikes, and a caller may read "edible_with_caution" as "edible"). These are NOT
   abstentions: the model did recognise the photo, it just may not vouch for eating it.
A label the catalog lacks has edibility "unknown" and counts as dangerous mass
(`danger_probability` = deadly + poisonous + unknown-label mass).

Two thresholds, two jobs. `danger_threshold` (5 %) decides whether a photo may get any reassuring
verdict: at or above it, the answer is at best "unknown". `warning_threshold` (>= danger_threshold;
None: the same) decides when the reply says DEADLY / POISONOUS outright. Between the two, the photo
gets "unknown", and the reply names the dangerous candidates with their share. So raising the warning
threshold can never create an "edible" or "inedible" verdict: it only turns a warning into an
"unknown — could be X (deadly)". A warning on every chanterelle with 6 % doubt would teach people
to ignore warnings; calibration tunes the warning threshold on validation so that danger recall
holds (vision_model.calibrate.tune_warning_threshold).

Out-of-distribution score: the energy E = -T * logsumexp(logits / T) of the raw logits
(Liu et al., 2020). In-distribution photos have low (very negative) energy; a photo of
something the model never saw tends to have higher energy. `ood_threshold` is fitted on
validation photos (e.g. the 95th percentile of their energies); None disables the check.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

SAFETY_FILE = "safety.json"


@dataclass
class SafetyConfig:
    """Calibration and decision thresholds; stored as safety.json in the model directory."""

    version: str = "untuned"  # model version string shown to users and in logs
    temperature: float = 1.0  # calibrated probabilities = softmax(logits / temperature)
    abstain_min_probability: float = 0.5  # below this top-1 probability: "unknown", abstained
    danger_threshold: float = 0.05  # dangerous mass at or above this wins over any edible top-1
    # deadly (+ poisonous) mass at or above this: the verdict says deadly / poisonous (None: danger_threshold)
    warning_threshold: float | None = None
    edible_min_probability: float = 0.9  # "edible" only when edible species hold this much mass
    ood_threshold: float | None = None  # energy score above this: abstain (None: off)
    # False: never say "edible" or "edible_with_caution" (edible-looking top-1 -> "unknown").
    allow_edible: bool = True
    extra: dict = field(default_factory=dict)  # any other keys (metrics, tuning notes), kept on save

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        for name in ("abstain_min_probability", "danger_threshold", "edible_min_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.warning_threshold is not None and not self.danger_threshold <= self.warning_threshold <= 1.0:
            raise ValueError(
                f"warning_threshold must be within [danger_threshold, 1], got {self.warning_threshold}"
            )
        if not isinstance(self.allow_edible, bool):
            raise ValueError(f"allow_edible must be true or false, got {self.allow_edible!r}")

    @property
    def warning_level(self) -> float:
        """The deadly/poisonous mass at which the verdict warns outright."""
        return self.danger_threshold if self.warning_threshold is None else self.warning_threshold

    @classmethod
    def from_dict(cls, data: dict) -> SafetyConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "allow_edible" not in data and _is_legacy_never_edible(kwargs.get("ood_threshold")):
            # Older calibrations said "never edible" with an OOD threshold below every energy,
            # which made every photo abstain. Read it as what it meant.
            kwargs["allow_edible"] = False
            kwargs["ood_threshold"] = None
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in known and k != "extra"})
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    @classmethod
    def load(cls, model_dir: str | Path) -> SafetyConfig:
        """Read <model_dir>/safety.json; a directory without one gets the (conservative) defaults."""
        path = Path(model_dir) / SAFETY_FILE
        if not path.exists():
            return cls()
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def save(self, model_dir: str | Path) -> Path:
        """Write <model_dir>/safety.json atomically (a reader never sees half a file)."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        path = model_dir / SAFETY_FILE
        fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".safety.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the release is read by other users
        os.replace(tmp, path)
        return path


# Older safety.json files used an ood_threshold at or below this to mean "never edible".
LEGACY_NEVER_EDIBLE_OOD = -1e8


def _is_legacy_never_edible(ood_threshold) -> bool:
    return ood_threshold is not None and ood_threshold <= LEGACY_NEVER_EDIBLE_OOD


@dataclass(frozen=True)
class VerdictResult:
    verdict: str  # one of knowledge_base.catalog.VERDICTS
    abstained: bool
    danger_probability: float


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax over the last axis, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """E = -T * logsumexp(logits / T) over the last axis; higher = less familiar."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]
    return -temperature * lse


def class_masses(
    probs: np.ndarray, labels: Sequence[str], edibility: Callable[[str], str]
) -> dict[str, float]:
    """Summed probability per edibility class ("unknown" for labels the catalog lacks)."""
    masses: dict[str, float] = {}
    for p, label in zip(probs, labels, strict=True):
        cls = edibility(label) or "unknown"
        masses[cls] = masses.get(cls, 0.0) + float(p)
    return masses


def danger_masses(masses: dict[str, float]) -> tuple[float, float, float]:
    """(deadly, deadly + poisonous, deadly + poisonous + unknown-label) mass: what the warning and danger
    thresholds are compared with."""
    deadly = masses.get("deadly", 0.0)
    toxic = deadly + masses.get("poisonous", 0.0)
    return deadly, toxic, toxic + masses.get("unknown", 0.0)


def decide(
    probs: np.ndarray,
    labels: Sequence[str],
    edibility: Callable[[str], str],
    safety: SafetyConfig,
    *,
    energy: float | None = None,
) -> VerdictResult:
    """Apply the safety rule (see the module docstring) to one calibrated distribution.

    `probs`: shape (n_labels,), calibrated, summing to 1. `edibility(label)` returns an
    edibility class or "unknown" (e.g. `default_catalog().edibility`). `energy`: the photo's
    energy score, used only when `safety.ood_threshold` is set.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"probs must have shape ({len(labels)},), got {probs.shape}")
    if len(labels) == 0 or not np.all(np.isfinite(probs)):
        # Nothing trustworthy to decide on: the safe answer.
        return VerdictResult("unknown", True, 1.0)

    masses = class_masses(probs, labels, edibility)
    deadly, toxic, danger = danger_masses(masses)
    danger_probability = min(1.0, danger)

    if deadly >= safety.warning_level:
        return VerdictResult("deadly", False, danger_probability)
    if toxic >= safety.warning_level:
        return VerdictResult("poisonous", False, danger_probability)
    if danger >= safety.danger_threshold:
        return VerdictResult("unknown", False, danger_probability)

    top = int(np.argmax(probs))
    out_of_distribution = (
        safety.ood_threshold is not None and energy is not None and energy > safety.ood_threshold
    )
    if probs[top] < safety.abstain_min_probability or out_of_distribution:
        return VerdictResult("unknown", True, danger_probability)

    top_class = edibility(labels[top]) or "unknown"
    if not safety.allow_edible:
        if top_class in ("edible", "edible_with_caution"):
            return VerdictResult("unknown", False, danger_probability)
        return VerdictResult(top_class, False, danger_probability)
    if top_class != "edible":
        return VerdictResult(top_class, False, danger_probability)
    if masses.get("edible", 0.0) >= safety.edible_min_probability:
        return VerdictResult("edible", False, danger_probability)
    # Not sure enough to say edible: fall back to the more probable "don't eat" class.
    inedible = masses.get("inedible", 0.0)
    caution = masses.get("edible_with_caution", 0.0)
    if max(inedible, caution) > 0.0:
        return VerdictResult(
            "inedible" if inedible >= caution else "edible_with_caution", False, danger_probability
        )
    return VerdictResult("unknown", False, danger_probability)


def decision_margin(
    probs: np.ndarray,
    labels: Sequence[str],
    edibility: Callable[[str], str],
    safety: SafetyConfig,
    *,
    energy: float | None = None,
    unsure_below: float = 0.5,
) -> tuple[float, float]:
    """How far one calibrated distribution sits from every line its reply depends on: `decide`'s thresholds,
    the "most likely" line of the reply (`unsure_below`) and the top-1 / top-2 tie. Returns the distance in
    probability (by how much any class mass could change without crossing a line; a difference of two masses
    counts half) and in energy (inf when the OOD check is off). A cheaper backend whose distributions differ
    from the exact one by less than these gives the same reply (vision_model.openvino_runner).

    The lines count whichever rule fires first (the check then asks for the exact answer a little more often,
    never less), except those only an edible top-1 reaches: the edible mass, and inedible-vs-caution, which
    decides only below the edible line."""
    probs = np.asarray(probs, dtype=np.float64)
    masses = class_masses(probs, labels, edibility)
    deadly, toxic, danger = danger_masses(masses)
    first, second = (np.sort(probs)[::-1].tolist() + [0.0, 0.0])[:2]
    gaps = [abs(deadly - safety.warning_level), abs(toxic - safety.warning_level),
            abs(danger - safety.danger_threshold), abs(first - safety.abstain_min_probability),
            abs(first - unsure_below), (first - second) / 2]
    if safety.allow_edible and len(probs) and edibility(labels[int(np.argmax(probs))]) == "edible":
        edible = masses.get("edible", 0.0)
        gaps.append(abs(edible - safety.edible_min_probability))
        if edible < safety.edible_min_probability:  # only then does inedible vs caution decide
            gaps.append(abs(masses.get("inedible", 0.0) - masses.get("edible_with_caution", 0.0)) / 2)
    energy_gap = (math.inf if safety.ood_threshold is None or energy is None
                  else abs(energy - safety.ood_threshold))
    return float(min(gaps)), float(energy_gap)


EMBEDDING_DIMS = 16


def output_embedding(logits: np.ndarray) -> np.ndarray:
    """The model's view of each image, small enough to log: its logits (the image's feature vector as the
    head projects it), centred (softmax ignores an offset) and reduced to EMBEDDING_DIMS by a fixed random
    projection (seeded by the label count, so a model's evaluation and its serving use the same one)."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    centred = logits - logits.mean(axis=1, keepdims=True)
    return centred @ _projection(logits.shape[1])


@functools.cache
def _projection(n_labels: int) -> np.ndarray:
    """Drawn once per label count (every identification uses it; the draw is the costly part)."""
    projection = np.random.default_rng(n_labels).standard_normal((n_labels, EMBEDDING_DIMS)) / np.sqrt(EMBEDDING_DIMS)
    projection.setflags(write=False)
    return projection
